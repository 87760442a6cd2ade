"""bench --turns' figures from a turn's events: gaps in the sound and in the video as a player would play them."""
from __future__ import annotations

import numpy as np
import pytest

from avatar.bench_turn import Question, measure_turn, playback_gap
from avatar.core.types import Audio
from avatar.turn.events import TurnEvent


def test_playback_gap_is_the_longest_wait_after_the_previous_piece_finished():
    assert playback_gap([(1.0, 0.7), (1.5, 2.0), (3.5, 1.0)]) == 0.0  # each arrives while the previous plays
    assert playback_gap([(1.0, 0.7), (1.9, 2.0)]) == 0.2
    assert playback_gap([(1.0, 0.5), (1.2, 0.5), (2.3, 1.0)]) == 0.3  # the second waits for the first: ends at 2.0


class _Turn:
    """A system whose turn replays given events at given seconds after the question was handed over."""

    def __init__(self, timeline: list[tuple[float, TurnEvent]]):
        self.timeline = timeline

    def new_conversation(self):
        return object()

    def respond(self, conv, **kwargs):
        import time
        t0 = time.perf_counter()
        for at, event in self.timeline:
            event.data["t"] = t0 + at
            yield event


def _speech(seconds: float) -> Audio:
    return Audio(np.zeros(int(seconds * 16000), np.float32), 16000)


def _frames(n: int) -> np.ndarray:
    return np.zeros((n, 4, 4, 3), np.uint8)


@pytest.mark.parametrize("media,gap", [("raw", 0.0), ("mp4", 0.4)])
def test_the_video_gap_is_over_frame_batches_with_raw_media_and_whole_chunks_with_mp4(media, gap, tmp_path):
    """A 0.8 s first chunk and a 3 s second one whose frames start 1.5 s in, in batches of 8 (0.32 s), drawn
    faster than real time: a raw player shows them without a wait; the MP4 of the second chunk is complete only
    at 2.2 s, 0.4 s after the first MP4 finished playing."""
    first, second = _speech(0.8), _speech(3.0)
    timeline = [(0.9, TurnEvent("audio", data={"audio": first, "index": 0})),
                (1.0, TurnEvent("frames", data={"frames": _frames(8), "index": 0})),
                (1.1, TurnEvent("frames", data={"frames": _frames(12), "index": 0})),
                (1.0, TurnEvent("chunk", data={"audio": first, "index": 0})),
                (1.4, TurnEvent("audio", data={"audio": second, "index": 1}))]
    timeline += [(1.5 + 0.1 * i, TurnEvent("frames", data={"frames": _frames(8), "index": 1})) for i in range(9)]
    timeline += [(2.2, TurnEvent("chunk", data={"audio": second, "index": 1})), (2.3, TurnEvent("done"))]
    figures = measure_turn(_Turn(timeline), Question("q", "en", _speech(1.0), True), None, media, tmp_path)
    assert figures["max_gap_s"] == pytest.approx(gap, abs=1e-3)
    assert figures["max_audio_gap_s"] == 0.0 and figures["chunks"] == 2
