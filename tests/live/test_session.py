"""LiveSession without a browser: the real AvatarSystem answers a spoken question streamed as microphone pieces, the
reply is pulled from the Playout at the pace of a WebRTC track, and speech over the reply interrupts it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from avatar.core.media import resample
from avatar.live.playout import OUT_RATE
from avatar.live.session import LiveOptions, LiveSession
from avatar.live.vad import SAMPLE_RATE
from avatar.turn.events import INTERRUPTED_MARK

STEP_S = 0.02  # the microphone and the speaker both move in 20 ms pieces, in real time


class Speaker(threading.Thread):
    """Pulls the reply's sound and frames like the WebRTC tracks do, and remembers what came out."""

    def __init__(self, session: LiveSession) -> None:
        super().__init__(daemon=True)
        self.session, self.sound, self.frames, self.running = session, [], 0, True

    def run(self) -> None:
        t0, n = time.perf_counter(), 0
        while self.running:
            n += 1
            self.sound.append(self.session.playout.next_audio(int(OUT_RATE * STEP_S)))
            self.frames += self.session.playout.frame() is not None
            time.sleep(max(0.0, t0 + n * STEP_S - time.perf_counter()))


def _say(session: LiveSession, samples: np.ndarray) -> None:
    piece = int(SAMPLE_RATE * STEP_S)
    t0 = time.perf_counter()
    for k, i in enumerate(range(0, len(samples), piece)):
        session.feed_mic(samples[i:i + piece])
        time.sleep(max(0.0, t0 + (k + 1) * STEP_S - time.perf_counter()))


def _wait(session: LiveSession, kind: str, after: int = 0, timeout_s: float = 300.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kinds = [e["kind"] for e in session.events]
        if kind in kinds[after:]:
            return after + kinds[after:].index(kind)
        assert "error" not in kinds, session.events
        time.sleep(0.05)
    pytest.fail(f"no {kind!r} event; events: {session.events}")


@pytest.fixture(scope="module")
def questions(system):
    def speech(text: str) -> np.ndarray:
        audio = system.speak(text, language="en")
        return np.concatenate([resample(audio, SAMPLE_RATE).samples,
                               np.zeros(SAMPLE_RATE, np.float32)])
    return [speech("Hello! What is your name?"), speech("Please tell me a long story about a cat on the moon."),
            speech("What is the capital of France?")]


@pytest.fixture
def session(system, astronaut):
    s = LiveSession(system, system.config.live, LiveOptions(photo=astronaut, settings={"size": 256}))
    speaker = Speaker(s)
    speaker.start()
    yield s, speaker
    speaker.running = False
    s.close()


def test_a_spoken_question_is_answered_with_sound_and_frames(session, questions):
    s, speaker = session
    _say(s, questions[0])
    played = _wait(s, "played")
    kinds = [e["kind"] for e in s.events[:played + 1]]
    # the transcript was made while the VAD waited for the end of the turn (the pause after the question)
    assert kinds[:3] == ["user_turn", "early_transcript", "transcript"], kinds
    assert {"first_audio", "first_frame", "done"} <= set(kinds)
    sound = np.concatenate(speaker.sound)
    assert np.abs(sound).max() > 0.05 and speaker.frames > 0
    assert len(s.conversation.rounds) == 1 and "name" in s.conversation.rounds[0][0].lower()
    _print_latency(s.events)


def test_speech_over_the_reply_interrupts_it_and_the_history_says_so(session, questions):
    s, speaker = session
    _say(s, questions[1])
    first = _wait(s, "first_audio")
    time.sleep(1.0)
    _say(s, questions[2])
    cut = _wait(s, "interrupted", first)
    assert s.events[cut]["heard"] and s.events[cut]["history_changed"]
    _wait(s, "played", cut)
    rounds = s.conversation.rounds
    assert len(rounds) == 2, rounds
    assert "cat" in rounds[0][0].lower() and rounds[0][1].endswith(INTERRUPTED_MARK)
    assert rounds[0][1].startswith(s.events[cut]["heard"][:10])
    assert "france" in rounds[1][0].lower() and not rounds[1][1].endswith(INTERRUPTED_MARK)
    _print_latency(s.events)


def _print_latency(events: list[dict]) -> None:
    """Server side, from the user's turn being heard (end of speech + end_silence_ms) to each later event."""
    start = next(e["t"] for e in events if e["kind"] == "user_turn")
    print({e["kind"]: round(e["t"] - start, 3) for e in reversed(events) if e["t"] >= start})
