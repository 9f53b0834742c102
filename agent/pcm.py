"""Streaming rational resampler for mono 16-bit PCM (pure: no asyncio, no I/O).

:class:`StreamResampler` converts ``in_rate`` to ``out_rate`` with a polyphase FIR
filter (upsample by ``L``, low-pass, downsample by ``M`` where ``L/M`` is the reduced
ratio ``out_rate/in_rate``).  It is built for audio that arrives in small frames
(20 ms telephony frames) and guarantees:

* **Exact, drift-free sample counts.**  After ``N`` input samples in total, in *any*
  chunking (including empty and 1-sample chunks), exactly ``floor(N * L / M)``
  output samples have been returned.  A 20 ms frame in is a 20 ms frame out from
  the very first call whenever 20 ms is a whole number of samples at both rates.
* **Chunking invariance.**  The output samples are bit-identical to converting the
  whole signal at once, because filter history and phase are carried across calls
  and the arithmetic is exact (see :data:`_COEF_FRAC_BITS`).
* **No wrap-around.**  Filter overshoot on full-scale input is rounded, then
  clipped to the int16 range, then cast (a bare ``astype(int16)`` wraps +33000 to
  -32536: a loud click).
* **Small, fixed delay.**  The filter is linear-phase; :attr:`StreamResampler.delay_ms`
  reports its group delay (1.875-3.2 ms for the telephony bands).

Output sample ``n`` is the filtered signal at time ``n / out_rate`` (minus the group
delay).  It is emitted by the call that delivers input sample
``ceil((n + 1) * M / L) - 1``, i.e. at most one input sample later than strictly
necessary; that is what makes the count ``floor`` rather than ``ceil``.

Equal rates are a pass-through (no filtering, zero delay).

Rate pairs with a huge ``L`` (e.g. 44100 -> 8000, ``L/M = 80/441``) work but build long
filters (tens of thousands of taps); they are meant for offline use such as
preparing WAV prompts, not for per-frame hot paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["StreamResampler", "resample"]

Int16Array = NDArray[np.int16]
_F64Array = NDArray[np.float64]

# Filter taps are rounded to multiples of 2**-24.  Inputs are integers below 2**15, so
# every product tap*sample is an integer multiple of 2**-24 below 2**39 * max|tap|, and
# a whole dot product stays far below 2**53: float64 then adds it up *exactly*, in any
# order.  That is what makes the output bit-identical however the stream is chunked
# (BLAS may sum a row in a different order depending on the matrix shape it is given).
# The coefficient rounding error (2**-25 relative to a tap of ~1) is ~-150 dB: harmless.
_COEF_FRAC_BITS: Final = 24

# Plans (strided views for one chunk geometry) are cached per instance; random chunk
# sizes would grow the cache without bound, so it is simply dropped when it gets big.
_MAX_PLANS: Final = 64
# A plan computes its output count rounded up to a multiple of this many times L: the
# model's audio arrives in chunks of any size (and the simulator's in random 20-120 ms
# ones), and one plan per exact size meant building views for nearly every chunk (5 us,
# plus the cache's churn). The extra outputs (fewer than this) are computed from whatever
# follows the chunk in the buffer and thrown away; they cost less than a plan.
_PLAN_QUANTUM: Final = 32

# Ratios whose factors L and M are both at most this use block-Toeplitz plans (``_Blocks``):
# the telephony pairs (8 k -> 16 k, 24 k -> 8 k) and the like (16 k -> 24 k, 48 k -> 8 k).
# Larger factors (44.1 k -> 8 k: L/M = 80/441) keep the strided plans: their matrices would
# be large, and they are for offline use.
_BLOCKED_MAX_FACTOR: Final = 8
# A block-Toeplitz plan computes a whole number of rows, rounded up to a multiple of this
# (fewer plans for the model's chunks of any size; the extra rows are thrown away).
_ROWS_QUANTUM: Final = 2

_INT16_MIN: Final = -32768.0
_INT16_MAX: Final = 32767.0
_F64_SIZE: Final = 8


@dataclass(frozen=True)
class _Design:
    """A polyphase filter bank, shared (read-only) by every resampler with these params."""

    ntaps: int  # length of the prototype low-pass filter at the upsampled rate
    phase_len: int  # K: taps per polyphase branch (ntaps rounded up to a multiple of L)
    bank: _F64Array  # (K, L): column p = branch p, time-reversed, ready for a dot product
    branches: tuple[_F64Array, ...]  # contiguous copies of the columns of ``bank``


def _kaiser_length_and_beta(
    attenuation_db: float, transition_hz: float, fs: float
) -> tuple[int, float]:
    """Kaiser's empirical formulas for the filter length and window shape.

    A Kaiser window is used because a single parameter (beta) trades main-lobe width
    against side-lobe level, so a stated stopband attenuation maps directly to a
    near-minimal length; a fixed window (Hann, Blackman) would either waste taps
    (delay, CPU) or miss the attenuation target.
    """
    dw = 2.0 * math.pi * transition_hz / fs
    numtaps = math.ceil((attenuation_db - 7.95) / (2.285 * dw)) + 1
    if attenuation_db > 50.0:
        beta = 0.1102 * (attenuation_db - 8.7)
    elif attenuation_db >= 21.0:
        beta = 0.5842 * (attenuation_db - 21.0) ** 0.4 + 0.07886 * (attenuation_db - 21.0)
    else:
        beta = 0.0
    return max(numtaps, 1), beta


def _windowed_sinc(
    ntaps: int, beta: float, passband_hz: float, stopband_hz: float, fs_up: float, gain: int
) -> _F64Array:
    """Kaiser-windowed sinc low-pass with DC gain ``gain``, taps rounded to 2**-24."""
    # Cut off in the middle of the transition band: the windowed sinc's ripple is
    # symmetric about the cutoff, so this spends the transition band evenly.
    cutoff = 0.5 * (passband_hz + stopband_hz) / fs_up  # cycles per upsampled sample
    t = np.arange(ntaps, dtype=np.float64) - 0.5 * (ntaps - 1)
    proto: _F64Array = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * np.kaiser(ntaps, beta)
    # Gain = L: zero-stuffing by L divides the level by L.  Normalising the sum (rather
    # than trusting the analytic gain) makes DC pass at exactly unity.
    proto *= gain / proto.sum()
    scale = float(1 << _COEF_FRAC_BITS)
    rounded: _F64Array = np.round(proto * scale) / scale
    return rounded


def _stopband_peak_db(taps: _F64Array, stopband_hz: float, fs: float) -> float:
    """Highest response at or above ``stopband_hz`` (dB), on a 16x oversampled grid."""
    nfft = 1 << max(12, (16 * taps.shape[0] - 1).bit_length())
    mag = np.abs(np.fft.rfft(taps, nfft))
    first = math.ceil(stopband_hz / fs * nfft)
    return 20.0 * math.log10(max(float(mag[first:].max()), 1e-300))


@lru_cache(maxsize=64)
def _design(
    up: int, in_rate: int, passband_hz: float, stopband_hz: float, attenuation_db: float
) -> _Design:
    """Design the prototype low-pass at ``up * in_rate`` and split it into ``up`` branches.

    Cached at module level: designing a 13k-tap filter takes a few milliseconds, and a
    call handler creates a fresh resampler per call (and may re-create on barge-in).
    """
    fs_up = float(up * in_rate)
    # Kaiser's formulas are empirical and land 1-2 dB short of the target for these
    # lengths, so measure the real stopband and redesign for a higher figure (both the
    # window shape and the length) until the promised attenuation holds.
    target = attenuation_db
    while True:
        ntaps, beta = _kaiser_length_and_beta(target, stopband_hz - passband_hz, fs_up)
        # Odd length: the delay (ntaps - 1) / 2 is then a whole number of upsampled
        # samples, which lets :func:`resample` remove it exactly.
        ntaps |= 1
        proto = _windowed_sinc(ntaps, beta, passband_hz, stopband_hz, fs_up, up)
        deficit = attenuation_db + _stopband_peak_db(proto / up, stopband_hz, fs_up)
        if deficit <= 0.0:
            break
        target += max(deficit, 0.25)

    phase_len = -(-ntaps // up)
    padded = np.zeros(phase_len * up, dtype=np.float64)
    padded[:ntaps] = proto
    # branch p holds taps p, p+L, p+2L, ...; reversed so that a window of input in
    # time order (oldest first) dotted with it gives the convolution.
    bank = np.ascontiguousarray(padded.reshape(phase_len, up)[::-1, :])
    worst_sum = float(np.abs(bank).sum(axis=0).max())
    # Guard for the exactness argument above (2**15 * 2**24 * worst_sum < 2**53).
    if worst_sum >= 2.0**13:
        raise ValueError("filter gain too large for exact float64 accumulation")
    bank.setflags(write=False)
    branches = tuple(np.ascontiguousarray(bank[:, p]) for p in range(up))
    for b in branches:
        b.setflags(write=False)
    return _Design(ntaps=ntaps, phase_len=phase_len, bank=bank, branches=branches)


@dataclass(frozen=True)
class _Blocks:
    """The filter as one matrix for ``outs`` consecutive outputs from ``n0`` (``n0 % L`` fixed).

    Output ``n`` is ``branch[(n*M) % L]`` dotted with the ``K`` inputs that end at input
    ``floor(n*M / L)``. For ``outs`` consecutive outputs (a multiple of ``L``) those windows
    start ``d(c) = floor((n0 + c)*M / L) - floor(n0*M / L)`` inputs after the first one and
    all end within ``width`` inputs of its start; the next ``outs`` outputs start exactly
    ``step = outs*M/L`` inputs later. So rows of ``width`` inputs taken every ``step`` inputs
    (a strided view of the input buffer, no copy of windows), times ``matrix`` (``width`` x
    ``outs``: column ``c`` holds its branch at offset ``d(c)``, zeros elsewhere), give all
    the outputs, row after row, in order. One BLAS product of compact matrices, shared by
    every stream, instead of a skinny one over a matrix of copied windows (``K`` samples per
    output: 66 KB for a 20 ms uplink block).
    """

    matrix: _F64Array  # (width, outs)
    step: int  # inputs between rows
    outs: int  # outputs per row


@lru_cache(maxsize=64)
def _blocks(
    up: int,
    down: int,
    in_rate: int,
    passband_hz: float,
    stopband_hz: float,
    attenuation_db: float,
) -> tuple[_Blocks, ...]:
    """One ``_Blocks`` per output phase ``n0 % L``, for ``_design``'s filter."""
    design = _design(up, in_rate, passband_hz, stopband_hz, attenuation_db)
    k = design.phase_len
    # About K/2 inputs per step, so each row spans three steps: ~1.5 K products per output
    # (zeros included) instead of K, but in one well-shaped product. Measured fastest for
    # the telephony pairs (bench/resampler_streams.py prints their speed under load).
    mult = max(1, -(-k // (2 * down)))
    outs, step = up * mult, down * mult
    plans: list[_Blocks] = []
    for key in range(up):
        first = key * down // up
        offsets = [(key + c) * down // up - first for c in range(outs)]
        width = -(-(offsets[-1] + k) // step) * step
        matrix = np.zeros((width, outs), dtype=np.float64)
        for c, d in enumerate(offsets):
            matrix[d : d + k, c] = design.branches[(key + c) * down % up]
        matrix.setflags(write=False)
        plans.append(_Blocks(matrix=matrix, step=step, outs=outs))
    return tuple(plans)


@dataclass(frozen=True)
class _Step:
    """One matrix-vector (or matrix-matrix) product of a plan."""

    windows: _F64Array  # (rows, K) strided view of the input buffer: one row per output
    taps: _F64Array  # (K,) one branch, or (K, g) several branches sharing the windows
    dest: _F64Array  # where the products go in the float output buffer (maybe strided)


@dataclass(frozen=True)
class _Plan:
    """Precomputed views for one (phase, buffer position, rounded output count) geometry."""

    steps: tuple[_Step, ...]
    direct: bool  # single step whose ``dest`` is contiguous: ``np.dot(..., out=dest)``
    result: _F64Array  # contiguous float view of all the outputs the plan computes


class StreamResampler:
    """Streaming polyphase resampler, int16 mono in -> int16 mono out.

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
        passband_hz: highest frequency to pass flat.  Default ``0.85 * min(in, out) / 2``.
        stopband_hz: lowest frequency that must be attenuated by ``attenuation_db``.
            Default ``min(in, out) / 2`` (the lower Nyquist rate: nothing can alias or
            image into the output band at all).  Telephony callers pass a stopband
            *above* the 4 kHz Nyquist rate (4.6 kHz): that halves the filter length and
            delay, and the only price is that what lies between 4 and 4.6 kHz folds into
            3.4-4 kHz, which the phone network's own filters discard anyway.
        attenuation_db: stopband attenuation the Kaiser design aims for.

    Equal rates are a pass-through (the band arguments are then ignored).  Instances
    are not thread-safe; use one per stream and direction.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        passband_hz: float | None = None,
        stopband_hz: float | None = None,
        attenuation_db: float = 70.0,
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        g = math.gcd(in_rate, out_rate)
        self.in_rate: Final = in_rate
        self.out_rate: Final = out_rate
        self._up: Final = out_rate // g
        self._down: Final = in_rate // g
        self._passthrough: Final = self._up == self._down
        self._carry = b""  # dangling odd byte of :meth:`process` input

        nyq_low = 0.5 * min(in_rate, out_rate)
        passband = 0.85 * nyq_low if passband_hz is None else float(passband_hz)
        stopband = nyq_low if stopband_hz is None else float(stopband_hz)
        self.passband_hz: Final = passband
        self.stopband_hz: Final = stopband
        blocks: tuple[_Blocks, ...] | None = None
        if not self._passthrough:
            fs_up_nyq = 0.5 * self._up * in_rate
            if not 0.0 < passband < stopband <= fs_up_nyq:
                raise ValueError(
                    f"need 0 < passband ({passband}) < stopband ({stopband}) <= {fs_up_nyq}"
                )
            if attenuation_db <= 0.0:
                raise ValueError("attenuation_db must be positive")
            design = _design(self._up, in_rate, passband, stopband, float(attenuation_db))
            if max(self._up, self._down) <= _BLOCKED_MAX_FACTOR:
                blocks = _blocks(
                    self._up, self._down, in_rate, passband, stopband, float(attenuation_db)
                )
        else:
            design = _Design(
                ntaps=1,
                phase_len=1,
                bank=np.ones((1, 1), dtype=np.float64),
                branches=(np.ones(1, dtype=np.float64),),
            )
        self._design = design
        self._blocks = blocks
        self._k: Final = design.phase_len
        self._quantum: Final = _PLAN_QUANTUM * self._up

        # Input buffer: [history | new chunk].  Plans hold views into it and into
        # ``_ybuf``, so both are only ever replaced by ``_grow`` (which drops the plans).
        self._buf: _F64Array = np.zeros(max(4 * self._k, 1024), dtype=np.float64)
        self._ybuf: _F64Array = np.zeros(1024, dtype=np.float64)
        self._plans: dict[tuple[int, int, int], _Plan] = {}
        self._hlen = 0
        self._g0 = 0  # global index of the input sample held in _buf[0]
        self._n_in = 0  # input samples consumed since the start / last reset
        self._n_out = 0  # output samples emitted since the start / last reset
        self.reset()

    # -- properties ---------------------------------------------------------------

    @property
    def ratio(self) -> tuple[int, int]:
        """``(L, M)``: the reduced up/down factors."""
        return self._up, self._down

    @property
    def num_taps(self) -> int:
        """Length of the prototype low-pass filter (at ``L * in_rate``)."""
        return 0 if self._passthrough else self._design.ntaps

    @property
    def taps(self) -> _F64Array:
        """The prototype low-pass filter at ``L * in_rate`` (read-only; ``[1.0]`` if equal rates).

        Output sample ``n`` is ``sum(taps[k] * u[n*M - k])`` where ``u`` is the input
        zero-stuffed by ``L`` (``u[i*L] = x[i]``, zero elsewhere), rounded and clipped.
        """
        if self._passthrough:
            return np.ones(1, dtype=np.float64)
        d = self._design
        proto = np.ascontiguousarray(d.bank[::-1, :].reshape(-1)[: d.ntaps])
        proto.setflags(write=False)
        return proto

    @property
    def delay_samples(self) -> float:
        """Group delay the filter adds, in output samples (may be fractional)."""
        if self._passthrough:
            return 0.0
        return 0.5 * (self._design.ntaps - 1) / self._down

    @property
    def delay_ms(self) -> float:
        """Group delay the filter adds, in milliseconds."""
        return 1000.0 * self.delay_samples / self.out_rate

    # -- streaming API ------------------------------------------------------------

    def reset(self) -> None:
        """Forget all history, phase and any carried odd byte: start a fresh stream.

        Used on barge-in so that nothing of the interrupted audio leaks into the next
        turn.  Sample counting restarts from zero as well.
        """
        k = self._k
        self._buf[: k - 1] = 0.0  # the stream is preceded by silence
        self._hlen = k - 1
        self._g0 = -(k - 1)
        self._n_in = 0
        self._n_out = 0
        self._carry = b""

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Convert a chunk of int16 little-endian mono PCM; returns the same format.

        An odd byte count is tolerated: the dangling byte is kept and prepended to the
        next call (a sample split across two chunks), rather than raising.
        """
        if self._carry or len(pcm) & 1:
            pcm = self._whole_samples(pcm)
        if self._passthrough:
            return bytes(pcm)
        y = self._run(np.frombuffer(pcm, dtype="<i2"))
        return y.astype("<i2", copy=False).tobytes()

    def process_array(self, x: Int16Array) -> Int16Array:
        """Convert a 1-D int16 array chunk; returns a new 1-D int16 array."""
        if x.dtype != np.int16 or x.ndim != 1:
            raise TypeError(f"expected a 1-D int16 array, got {x.dtype} with shape {x.shape}")
        if self._passthrough:
            return x.copy()
        return self._run(x)

    def flush_array(self) -> Int16Array:
        """End of stream: emit the tail still inside the filter, then :meth:`reset`.

        Returns every remaining output sample that the input fed so far still
        contributes to, i.e. the stream continued with silence until the filter has
        emptied (about ``2 * delay_samples`` samples; nothing after them would be
        non-zero).  Any carried odd byte is discarded.  Not needed between chunks of a
        continuing stream: there the tail simply comes out with the next chunk.
        """
        if self._passthrough or self._n_in == 0:
            self.reset()
            return np.zeros(0, dtype=np.int16)
        up, down = self._up, self._down
        # Last output whose window still holds input sample n_in - 1: its upsampled time
        # n*M may be at most (n_in - 1)*L + ntaps - 1.
        target = ((self._n_in - 1) * up + self._design.ntaps - 1) // down + 1
        need_in = -(-target * down // up)
        tail = max(0, target - self._n_out)
        pad = np.zeros(max(0, need_in - self._n_in), dtype=np.int16)
        y = self._run(pad)[:tail]
        self.reset()
        return y

    def flush(self) -> bytes:
        """Bytes version of :meth:`flush_array` (int16 little-endian)."""
        return self.flush_array().astype("<i2", copy=False).tobytes()

    # -- internals ----------------------------------------------------------------

    def _whole_samples(self, pcm: bytes | bytearray | memoryview) -> bytes:
        data = self._carry + bytes(pcm)
        if len(data) & 1:
            self._carry = data[-1:]
            return data[:-1]
        self._carry = b""
        return data

    def _run(self, x: NDArray[np.int16]) -> Int16Array:
        up, down, k = self._up, self._down, self._k
        n = x.shape[0]
        hlen = self._hlen
        end = hlen + n
        n_in = self._n_in + n
        n_out = self._n_out
        n_end = n_in * up // down  # floor(N * L / M): outputs whose input is complete
        nout = n_end - n_out
        rel_i0 = n_out * down // up - self._g0
        blocks = self._blocks
        if blocks is not None:
            b = blocks[n_out % up]
            rows = -(-nout // b.outs)
            rows = -(-rows // _ROWS_QUANTUM) * _ROWS_QUANTUM
            span = rows * b.outs  # what the plan computes
            # Its last row ends at input rel_i0 - (K-1) + (rows-1)*step + width.
            need_in = rel_i0 - (k - 1) + (rows - 1) * b.step + b.matrix.shape[0]
        else:
            span = -(-nout // self._quantum) * self._quantum  # what the plan computes
            # The last computed output's window ends at input rel_i0 + ((span-1)*M + L-1)//L.
            need_in = rel_i0 + ((span - 1) * down + up - 1) // up + 1
        if end > need_in:
            need_in = end
        if need_in > self._buf.shape[0] or span > self._ybuf.shape[0]:
            self._grow(need_in, span)
        buf = self._buf
        buf[hlen:end] = x

        out = np.empty(nout, dtype=np.int16)
        if nout > 0:
            key = (n_out % up, rel_i0, span)
            plan = self._plans.get(key)
            if plan is None:
                plan = self._make_plan(*key)
            if plan.direct:
                s = plan.steps[0]
                np.dot(s.windows, s.taps, out=s.dest)
            else:
                for s in plan.steps:
                    s.dest[...] = np.dot(s.windows, s.taps)
            y = plan.result if span == nout else plan.result[:nout]
            # Clip before rounding: with integer bounds this equals round-then-clip, and
            # clipping first lets ``rint`` write straight into the int16 result: values
            # are then already in range, so the unsafe cast cannot wrap around.
            np.minimum(y, _INT16_MAX, out=y)
            np.maximum(y, _INT16_MIN, out=y)
            np.rint(y, out=out, casting="unsafe")

        # Keep only what the next output's window needs.
        keep_from = n_end * down // up - (k - 1)
        start = keep_from - self._g0
        if start > 0:
            newh = n_in - keep_from
            buf[:newh] = buf[start : start + newh]
            self._g0 = keep_from
            self._hlen = newh
        else:
            self._hlen = end
        self._n_in = n_in
        self._n_out = n_end
        return out

    def _grow(self, need_in: int, need_out: int) -> None:
        if need_in > self._buf.shape[0]:
            new = np.zeros(max(need_in, 2 * self._buf.shape[0]), dtype=np.float64)
            new[: self._hlen] = self._buf[: self._hlen]
            self._buf = new
        if need_out > self._ybuf.shape[0]:
            self._ybuf = np.zeros(max(need_out, 2 * self._ybuf.shape[0]), dtype=np.float64)
        self._plans.clear()

    def _make_plan(self, phase_key: int, rel_i0: int, nout: int) -> _Plan:
        """Build strided views for ``nout`` outputs starting at output phase ``phase_key``.

        Outputs ``n0 + r + b*L`` (fixed r) all use the same filter branch and windows
        that start ``M`` input samples apart, so each r is one strided matrix times one
        branch.  Consecutive r whose windows coincide (always the case when M == 1)
        share a single matrix-matrix product, whose rows then interleave naturally.
        """
        if self._blocks is not None:
            return self._make_blocked_plan(phase_key, rel_i0, nout)
        up, down, k = self._up, self._down, self._k
        p0 = phase_key * down % up
        groups: list[tuple[int, int, int, list[int]]] = []  # (r0, start, count, phases)
        for r in range(min(up, nout)):
            start = rel_i0 + (p0 + r * down) // up - (k - 1)
            count = (nout - r + up - 1) // up
            phase = (p0 + r * down) % up
            if groups and groups[-1][1] == start and groups[-1][2] == count:
                groups[-1][3].append(phase)
            else:
                groups.append((r, start, count, [phase]))

        steps: list[_Step] = []
        for r0, start, count, phases in groups:
            windows: _F64Array = np.ndarray(
                (count, k),
                dtype=np.float64,
                buffer=self._buf,
                offset=_F64_SIZE * start,
                strides=(_F64_SIZE * down, _F64_SIZE),
            )
            taps: _F64Array
            dest: _F64Array
            if len(phases) == 1:
                taps = self._design.branches[phases[0]]
                dest = self._ybuf[r0 : r0 + (count - 1) * up + 1 : up]
            else:
                taps = np.ascontiguousarray(self._design.bank[:, phases])
                dest = np.ndarray(
                    (count, len(phases)),
                    dtype=np.float64,
                    buffer=self._ybuf,
                    offset=_F64_SIZE * r0,
                    strides=(_F64_SIZE * up, _F64_SIZE),
                )
            steps.append(_Step(windows=windows, taps=taps, dest=dest))

        result = self._ybuf[:nout]
        direct = len(steps) == 1 and steps[0].dest.flags.c_contiguous
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        plan = _Plan(steps=tuple(steps), direct=direct, result=result)
        self._plans[(phase_key, rel_i0, nout)] = plan
        return plan

    def _make_blocked_plan(self, phase_key: int, rel_i0: int, nout: int) -> _Plan:
        """Views for ``nout`` outputs (whole rows) with the phase's ``_Blocks`` matrix."""
        assert self._blocks is not None
        b = self._blocks[phase_key]
        rows = nout // b.outs
        width = b.matrix.shape[0]
        windows: _F64Array = np.ndarray(
            (rows, width),
            dtype=np.float64,
            buffer=self._buf,
            offset=_F64_SIZE * (rel_i0 - (self._k - 1)),
            strides=(_F64_SIZE * b.step, _F64_SIZE),
        )
        dest: _F64Array = np.ndarray((rows, b.outs), dtype=np.float64, buffer=self._ybuf)
        step = _Step(windows=windows, taps=b.matrix, dest=dest)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        plan = _Plan(steps=(step,), direct=True, result=self._ybuf[:nout])
        self._plans[(phase_key, rel_i0, nout)] = plan
        return plan


def resample(
    x: Int16Array,
    in_rate: int,
    out_rate: int,
    *,
    passband_hz: float | None = None,
    stopband_hz: float | None = None,
    attenuation_db: float = 70.0,
) -> Int16Array:
    """Offline (whole-signal) conversion with the filter delay removed exactly.

    Returns exactly ``floor(len(x) * L / M)`` samples; output sample ``n`` is the
    filtered input at time ``n / out_rate`` (no delay, no fractional shift).  The signal
    is treated as silent before and after ``x``.  Meant for files (prompts, fixtures),
    not for streams.
    """
    if x.dtype != np.int16 or x.ndim != 1:
        raise TypeError(f"expected a 1-D int16 array, got {x.dtype} with shape {x.shape}")
    rs = StreamResampler(
        in_rate,
        out_rate,
        passband_hz=passband_hz,
        stopband_hz=stopband_hz,
        attenuation_db=attenuation_db,
    )
    up, down = rs.ratio
    if up == down:
        return x.copy()
    n_out = x.shape[0] * up // down
    # The stream's output n is the input at upsampled time n*M - D (D = filter delay,
    # a whole number because the length is odd).  Prepending z zeros and skipping k
    # outputs gives time (n+k)*M - z*L - D, which is n*M when k*M = D + z*L: choose
    # z in [0, M) with D + z*L divisible by M (always possible: gcd(L, M) = 1).
    delay = (rs.num_taps - 1) // 2
    z = (-delay * pow(up, -1, down)) % down
    k = (delay + z * up) // down
    pad = max(0, -(-(k + n_out) * down // up) - z - x.shape[0])
    y = rs.process_array(
        np.concatenate([np.zeros(z, np.int16), x, np.zeros(pad, np.int16)]).astype(np.int16)
    )
    return np.ascontiguousarray(y[k : k + n_out])
