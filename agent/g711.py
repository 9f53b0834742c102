"""The stdlib's ``audioop`` (CPython's C code), imported once and quietly, for both sides.

It is the G.711 reference and the cheapest level meter (~0.3 µs per 20 ms frame). Deprecated
in 3.11/3.12 and removed in 3.13, where the ``audioop-lts`` package provides the same module;
the deprecation warning is silenced so that ``-W error`` runs (pytest here) can import us.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["audioop"]
