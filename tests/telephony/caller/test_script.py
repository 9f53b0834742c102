"""The caller's script: cutting a recorded track into turns."""

from __future__ import annotations

import pytest

from support.caller import SILENCE, tone
from telephony.caller.script import split_turns


def test_split_turns_cuts_utterances_with_padding_and_groups_keys() -> None:
    audio = SILENCE * 50 + tone(0.6) + SILENCE * 100 + tone(0.4) + SILENCE * 150
    turns = split_turns(audio, dtmf=[(3.5, "1"), (3.8, "2"), (4.2, "#"), (8.0, "9")])
    assert [t.recorded_at_s for t in turns] == pytest.approx([0.9, 3.5, 8.0])
    first, second, keys = turns
    # 0.1 s of lead-in, the words, 0.2 s of tail (VAD frames are 20 ms).
    assert first.audio == SILENCE * 5 + tone(0.6) + SILENCE * 10
    assert second.audio == SILENCE * 5 + tone(0.4) + SILENCE * 10
    assert first.lead_s == pytest.approx(0.1)
    # Keys within 1.5 s of a turn join it, with their spacing; a lone key is its own turn.
    assert [d for d, _ in second.dtmf] == pytest.approx([0.0, 0.3, 0.7])
    assert [k for _, k in second.dtmf] == ["1", "2", "#"]
    assert keys.audio == b"" and keys.dtmf == ((0.0, "9"),)
    assert second.duration_s == pytest.approx(0.7)
    assert split_turns(SILENCE * 100) == []


def test_split_turns_never_pads_into_the_neighbour() -> None:
    audio = tone(0.3) + SILENCE * 4 * 16 + tone(0.3)  # 0.64 s apart, > the VAD's 0.5 s
    turns = split_turns(audio)
    assert len(turns) == 2
    assert len(turns[0].audio) + len(turns[1].audio) <= len(audio)
    assert turns[0].audio.startswith(tone(0.3)) and turns[1].audio.endswith(tone(0.3))
