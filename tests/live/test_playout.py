"""The Playout: chunks play back to back with no gap, the face follows the sound's clock, an interruption silences
the next piece and tells what was heard."""
from __future__ import annotations

import numpy as np

from avatar.core.types import FPS, Audio
from avatar.live.playout import OUT_RATE, Playout


def _tone(seconds: float, rate: int = 22050, hz: float = 220.0) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 + 0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)  # never near 0


def _frames(n: int, value: int) -> np.ndarray:
    frames = np.zeros((n, 8, 8, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)  # each frame knows its number
    frames[:, 0, 0, 1] = value
    return frames


def _pull(playout: Playout, seconds: float) -> np.ndarray:
    return np.concatenate([playout.next_audio(OUT_RATE // 50) for _ in range(int(seconds * 50))])


def test_chunks_play_back_to_back_without_a_gap():
    played, starts = [], []
    p = Playout(on_played=lambda s, r: played.append(len(s)), on_start=starts.append)
    p.add_audio(0, _tone(0.5), "one two")
    p.add_audio(1, _tone(0.7, 16000), "three four")
    out = _pull(p, 1.5)
    voiced = np.flatnonzero(np.abs(out) > 0.005)
    assert voiced[0] == 0 and len(voiced) == voiced[-1] + 1  # no silent sample between the chunks
    assert abs(len(voiced) / OUT_RATE - 1.2) < 0.01
    assert not p.speaking and starts == ["audio"] and sum(played) == len(voiced)


def test_the_face_follows_the_sound_and_waits_for_frames_not_drawn_yet():
    p = Playout()
    p.add_audio(0, _tone(1.0), "hello there")
    assert p.frame() is None  # nothing drawn: the page keeps the resting face
    p.add_frames(0, 0, _frames(10, 7))
    _pull(p, 0.2)
    assert p.frame()[0, 0, 0] == int(0.2 * FPS)  # frame 5 at 0.2 s
    _pull(p, 0.4)
    assert p.frame()[0, 0, 0] == 9  # frames 10.. are not drawn yet: the last drawn one stays
    p.add_frames(0, 10, _frames(15, 7)[10:15])
    assert p.frame()[0, 0, 0] == 14  # 0.6 s -> frame 15, the newest drawn is 14


def test_an_interruption_silences_the_next_piece_and_tells_what_was_heard():
    p = Playout()
    p.add_audio(0, _tone(1.0), "one two three four")
    p.add_audio(1, _tone(1.0), "five six")
    _pull(p, 1.5)  # all of chunk 0, half of chunk 1
    heard = p.clear()
    assert heard == "one two three four five"
    assert not p.speaking and np.all(_pull(p, 0.1) == 0)
