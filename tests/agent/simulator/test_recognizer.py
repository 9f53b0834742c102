"""The recognizer's phrase cutter (pure) and, with pocketsphinx installed, phrase-by-phrase text."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest

from agent.simulator.recognizer import RATE, Phrases, RecognizerPool
from support import ROOT

FRAME = Phrases.FRAME


def tone(seconds: float, level: float = 8000.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return bytes(2 * int(seconds * RATE))


def feed(phrases: Phrases, pcm: bytes, piece: int = 640) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(pcm), piece):
        out += phrases.add(pcm[i : i + piece])
    return out


def test_a_pause_after_a_phrase_cuts_it_in_the_middle_of_the_pause() -> None:
    phrases = Phrases()
    [first] = feed(phrases, tone(1.5) + quiet(0.4) + tone(1.2))
    # Cut 125 ms into the pause (its middle once 250 ms of it were heard).
    assert len(first) == 2 * (int(1.5 * RATE) + FRAME * (Phrases.PAUSE_MS // 20))
    assert len(first) + len(phrases.rest()) == 2 * int(3.1 * RATE)


def test_no_cut_before_the_phrase_is_long_enough_or_at_a_short_dip() -> None:
    phrases = Phrases()
    # A pause after 0.5 s of speech is too early; a 150 ms dip is not a pause.
    assert feed(phrases, tone(0.5) + quiet(0.4) + tone(1.0) + quiet(0.15) + tone(1.0)) == []
    assert len(phrases.rest()) == 2 * int(3.05 * RATE)


def test_a_phrase_without_pauses_is_cut_at_its_quietest_frame_of_the_last_second() -> None:
    phrases = Phrases()
    speech = tone(7.5) + tone(0.05, level=500.0) + tone(2.0)  # a dip at 7.5 s, no pause
    [first] = feed(phrases, speech)
    cut_s = len(first) / 2 / RATE
    assert 7.5 <= cut_s <= 7.56


def test_cuts_do_not_depend_on_how_the_audio_was_split() -> None:
    speech = tone(1.2) + quiet(0.5) + tone(2.0) + quiet(0.3) + tone(1.1)
    a, b = Phrases(), Phrases()
    cuts_a = [*feed(a, speech, piece=640), a.rest()]
    cuts_b = [*feed(b, speech, piece=322), b.rest()]
    assert [len(c) for c in cuts_a] == [len(c) for c in cuts_b]
    assert len(cuts_a) == 3
    assert b"".join(cuts_a) == speech


def clip(name: str) -> tuple[int, bytes]:
    with wave.open(str(ROOT / f"telephony/caller/samples/{name}.wav")) as w:
        return w.getframerate(), w.readframes(w.getnframes())


async def test_two_sentences_are_transcribed_phrase_by_phrase_as_they_are_said() -> None:
    pytest.importorskip("pocketsphinx")
    rate, first = clip("librivox-0880")
    other, second = clip("librivox-0890")
    assert other == rate
    pool = RecognizerPool(threads=1)
    job = pool.open(rate)
    texts = job.texts()
    step = rate // 50 * 2
    pcm = first + bytes(rate) + second  # a second's pause between the sentences
    for i in range(0, len(first) + rate, step):
        job.feed(pcm[i : i + step])
    # The first sentence's words come out while the caller is still on the line.
    early = await asyncio.wait_for(anext(texts), 30)
    assert "he was not" in early
    for i in range(len(first) + rate, len(pcm), step):
        job.feed(pcm[i : i + step])
    job.close()
    later = [t async for t in texts]
    assert later
    assert "selfish" in " ".join(later)
    assert pool.cpu_s > 0


async def test_under_load_phrases_are_skipped_not_queued_without_bound() -> None:
    pytest.importorskip("pocketsphinx")
    rate, first = clip("librivox-0880")
    pool = RecognizerPool(threads=1, max_waiting=1)
    jobs = [pool.open(rate) for _ in range(3)]
    for job in jobs:
        job.feed(first)
        job.close()
    texts = [await asyncio.wait_for(job.text(), 30) for job in jobs]
    assert "he was not" in texts[0]
    assert pool.refused >= 1
    assert "" in texts
