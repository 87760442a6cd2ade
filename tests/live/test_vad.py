"""The hands-free VAD on real speech: where a turn ends, when the avatar is interrupted, and its echo ignored."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from avatar.core.config import LiveConfig
from avatar.core.media import load_audio
from avatar.live.echo import EchoGuard
from avatar.live.vad import SAMPLE_RATE, Endpointer

CFG = LiveConfig()


def _speech(path) -> np.ndarray:
    audio = load_audio(path, SAMPLE_RATE)
    return audio.samples


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(s * SAMPLE_RATE), np.float32)


def _feed(ep: Endpointer, signal: np.ndarray, step: int = 960, **kw) -> list:
    """In 60 ms pieces, as a WebRTC reader hands them over."""
    events = []
    for i in range(0, len(signal), step):
        events += ep.feed(signal[i:i + step], **kw)
    return events


@pytest.fixture(scope="module")
def zh(zh_path):
    return _speech(zh_path)


@pytest.fixture(scope="module")
def en(jfk_path):
    return _speech(jfk_path)


def _turns(events: list) -> list:
    return [e for e in events if e.kind == "turn"]


def test_one_turn_ends_after_the_configured_silence(zh):
    events = _feed(Endpointer(CFG), np.concatenate([_silence(1.0), zh, _silence(2.0)]))
    assert [e.kind for e in events] == ["pause", "turn"]
    turn = events[1]
    true_end = 1.0 + np.flatnonzero(np.abs(zh) > 0.02)[-1] / SAMPLE_RATE
    assert abs(turn.speech_end_s - true_end) < 0.35, (turn.speech_end_s, true_end)
    assert turn.at_s - turn.speech_end_s == pytest.approx(CFG.end_silence_ms / 1000, abs=0.07)
    onset = 1.0 + np.flatnonzero(np.abs(zh) > 0.02)[0] / SAMPLE_RATE
    assert abs(turn.start_s - onset) < 0.3
    assert len(turn.audio) / SAMPLE_RATE == pytest.approx(len(zh) / SAMPLE_RATE, abs=0.8)


def test_two_questions_are_two_turns_and_silence_or_noise_none(zh):
    ep = Endpointer(CFG)
    rng = np.random.default_rng(0)
    noise = (0.003 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    events = _feed(ep, np.concatenate([noise, zh, _silence(1.5), zh, _silence(1.5), noise]))
    turns = [e for e in events if e.kind == "turn"]
    assert [e.kind for e in events] == ["pause", "turn", "pause", "turn"]
    assert turns[0].speech_end_s < turns[1].start_s


def test_a_click_is_not_a_turn(zh):
    voiced = np.flatnonzero(np.abs(zh) > 0.1)[0]
    click = zh[voiced:voiced + int(0.12 * SAMPLE_RATE)]
    assert _feed(Endpointer(CFG), np.concatenate([_silence(0.5), click, _silence(1.5)])) == []


def test_a_longer_end_silence_waits_through_a_pause(en):
    """JFK pauses between phrases: the default ends turns there, a 1.5 s end_silence_ms keeps one turn."""
    signal = np.concatenate([_silence(0.5), en, _silence(2.0)])
    short = _feed(Endpointer(CFG), signal)
    long = _feed(Endpointer(LiveConfig(end_silence_ms=1500)), signal)
    assert len(_turns(short)) > 1 and len(_turns(long)) == 1 and long[-1].kind == "turn"


def test_user_speech_over_the_avatar_interrupts_it_then_becomes_a_turn(zh):
    guard = EchoGuard(CFG.echo_similarity)
    guard.played(_silence(1.0) + 0.0, SAMPLE_RATE)
    events = _feed(Endpointer(CFG), np.concatenate([_silence(1.0), zh, _silence(1.5)]), speaking=True,
                   is_echo=guard.is_echo)
    assert [e.kind for e in events] == ["interrupt", "pause", "turn"]
    onset = 1.0 + np.flatnonzero(np.abs(zh) > 0.05)[0] / SAMPLE_RATE
    assert 0 < events[0].at_s - onset < CFG.interrupt_min_ms / 1000 + 0.25
    assert events[2].start_s == events[0].start_s


def test_short_speech_over_the_avatar_does_not_interrupt(zh):
    voiced = np.flatnonzero(np.abs(zh) > 0.1)[0]
    burst = zh[voiced:voiced + int(0.1 * SAMPLE_RATE)]
    events = _feed(Endpointer(CFG), np.concatenate([_silence(0.5), burst, _silence(1.0)]), speaking=True)
    assert events == []


def _room_echo(voice: np.ndarray, delay_s: float, gain: float, seed: int = 1) -> np.ndarray:
    """The avatar's voice from the speakers: delayed, quieter, low-passed, a short reverb tail, a little noise."""
    rng = np.random.default_rng(seed)
    lowpassed = lfilter([0.25, 0.5, 0.25], [1.0], voice)
    reverb = lfilter([1.0], [1.0] + [0.0] * 399 + [-0.3], lowpassed)  # a reflection 25 ms later, decaying
    delayed = np.concatenate([_silence(delay_s), reverb])[:len(voice)]
    return (gain * delayed + 0.002 * rng.standard_normal(len(voice))).astype(np.float32)


@pytest.mark.parametrize("delay_s", [0.05, 0.25])
def test_the_avatars_own_echo_neither_interrupts_nor_starts_a_turn(en, delay_s):
    avatar = en[:6 * SAMPLE_RATE]
    guard = EchoGuard(CFG.echo_similarity)
    ep, events = Endpointer(CFG), []
    for i in range(0, len(avatar), 960):  # the avatar plays a piece, the microphone hears it back
        guard.played(avatar[i:i + 960], SAMPLE_RATE)
        events += ep.feed(_room_echo(avatar, delay_s, 0.4)[i:i + 960], speaking=True, is_echo=guard.is_echo)
    events += ep.feed(_silence(1.5), speaking=False, is_echo=guard.is_echo)
    assert events == []


def test_the_user_talking_over_the_echo_still_interrupts(en, zh):
    avatar = en[:5 * SAMPLE_RATE]
    mic = _room_echo(avatar, 0.1, 0.25)
    user = np.concatenate([_silence(1.5), zh])[:len(mic)]
    mic = mic + user
    guard = EchoGuard(CFG.echo_similarity)
    ep, events = Endpointer(CFG), []
    for i in range(0, len(avatar), 960):
        guard.played(avatar[i:i + 960], SAMPLE_RATE)
        events += ep.feed(mic[i:i + 960], speaking=True, is_echo=guard.is_echo)
    assert [e.kind for e in events][:1] == ["interrupt"]
    assert events[0].at_s > 1.5


def test_a_pause_hands_over_the_audio_that_becomes_the_turn(zh):
    """early_asr_ms of silence: a pause event whose audio may be transcribed at once; when nothing more is said the
    turn carries the very same array (its transcript is the turn's); when speech goes on, the turn's audio is new and
    holds both parts."""
    ep = Endpointer(CFG)
    events = _feed(ep, np.concatenate([_silence(0.5), zh, _silence(1.0)]))
    pause, turn = events
    assert pause.kind == "pause" and turn.kind == "turn" and turn.audio is pause.audio
    assert pause.at_s - pause.speech_end_s == pytest.approx(CFG.early_asr_ms / 1000, abs=0.04)
    assert pause.at_s < turn.at_s - (CFG.end_silence_ms - CFG.early_asr_ms) / 1000 + 0.04
    half = len(zh) // 2
    events = _feed(Endpointer(CFG), np.concatenate([_silence(0.5), zh[:half], _silence(0.4), zh[half:],
                                                    _silence(1.0)]))
    assert [e.kind for e in events] == ["pause", "pause", "turn"]
    assert events[2].audio is events[1].audio and len(events[2].audio) > len(events[0].audio) + 0.4 * SAMPLE_RATE


def test_no_pause_events_when_early_transcription_is_off(zh):
    events = _feed(Endpointer(LiveConfig(early_asr_ms=0)), np.concatenate([_silence(0.5), zh, _silence(1.0)]))
    assert [e.kind for e in events] == ["turn"]


def test_no_pause_while_the_avatar_speaks_unless_it_was_interrupted(zh):
    """Speech over the avatar that has not (yet) interrupted it is not transcribed early: it may be its echo."""
    voiced = np.flatnonzero(np.abs(zh) > 0.1)[0]
    words = zh[voiced:voiced + int(0.8 * SAMPLE_RATE)]
    patient = LiveConfig(interrupt_min_ms=5000)  # the words alone never interrupt
    signal = np.concatenate([_silence(0.5), words, _silence(0.5)])
    assert _feed(Endpointer(patient), signal, speaking=True) == []
    assert [e.kind for e in _feed(Endpointer(patient), signal)] == ["pause"]
