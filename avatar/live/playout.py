"""The reply as the browser hears and sees it: its chunks' speech queued back to back on one sample clock, and their
frames shown at that clock's position, so the face stays in step with the voice whatever the render's pace.

The WebRTC audio track takes samples every 20 ms, the video track asks for the frame of the moment every 40 ms; both
run in the event loop while the turn's thread adds chunks, hence the lock."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from avatar.core.media import resample
from avatar.core.types import FPS, Audio

OUT_RATE = 48000  # WebRTC's Opus clock


@dataclass
class _Chunk:
    index: int
    start: int  # sample position on the turn's clock where its speech starts
    length: int
    text: str
    frames: dict[int, np.ndarray] = field(default_factory=dict)


class Playout:
    def __init__(self, on_played: Callable[[np.ndarray, int], None] | None = None,
                 on_start: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_played = on_played  # told every piece of sound that goes out (the echo check's reference)
        self._on_start = on_start  # told "audio" / "frame" when a reply's first sound / face goes out
        self._reset()
        self.last_frame: np.ndarray | None = None  # the face at rest between replies

    def _reset(self) -> None:
        self._chunks: list[_Chunk] = []
        self._queued: list[np.ndarray] = []
        self._position = self._end = 0  # samples played / queued on this turn's clock
        self._started: set[str] = set()

    def add_audio(self, index: int, audio: Audio, text: str) -> None:
        samples = resample(audio, OUT_RATE).samples  # a whole chunk: the speech from the TTS to Opus's 48 kHz
        with self._lock:
            self._chunks.append(_Chunk(index, self._end, len(samples), text))
            self._queued.append(samples)
            self._end += len(samples)

    def add_frames(self, index: int, first_frame: int, frames: np.ndarray) -> None:
        with self._lock:
            chunk = next((c for c in self._chunks if c.index == index), None)
            if chunk is not None:  # a chunk cleared by an interruption gets no frames
                chunk.frames.update({first_frame + i: f for i, f in enumerate(frames)})

    @property
    def speaking(self) -> bool:
        with self._lock:
            return self._position < self._end

    def next_audio(self, n: int) -> np.ndarray:
        """The next n samples at OUT_RATE: the reply's, then silence."""
        with self._lock:
            out = np.zeros(n, np.float32)
            filled = 0
            while filled < n and self._queued:
                head = self._queued[0]
                take = min(n - filled, len(head))
                out[filled:filled + take] = head[:take]
                self._queued[0] = head[take:]
                if not len(self._queued[0]):
                    self._queued.pop(0)
                filled += take
            self._position += filled
        if filled:
            self._started_once("audio")
            if self._on_played is not None:
                self._on_played(out[:filled], OUT_RATE)
        return out

    def _started_once(self, what: str) -> None:
        if what not in self._started:
            self._started.add(what)
            if self._on_start is not None:
                self._on_start(what)

    def frame(self) -> np.ndarray | None:
        """The frame for the sound being played now (the one before it while it is not drawn yet), else the face at
        rest."""
        with self._lock:
            chunk, image = self._current(), None
            if chunk is not None:
                k = (self._position - chunk.start) * FPS // OUT_RATE
                drawn = [i for i in chunk.frames if i <= k]
                image = chunk.frames[max(drawn)] if drawn else None
            if image is None:
                return self.last_frame
            self.last_frame = image
        self._started_once("frame")
        return image

    def _current(self) -> _Chunk | None:
        for chunk in self._chunks:
            if chunk.start <= self._position < chunk.start + chunk.length or (
                    self._position == self._end and chunk.start + chunk.length == self._end):
                return chunk
        return None

    def heard_text(self) -> str:
        """What the user heard: the chunks played through and the played share of the current one's words."""
        with self._lock:
            parts = []
            for c in self._chunks:
                share = min(max((self._position - c.start) / max(c.length, 1), 0.0), 1.0)
                parts.append(_first_share(c.text, share))
            return " ".join(p for p in parts if p).strip()

    def clear(self) -> str:
        """Silence from the next 20 ms on: everything queued goes. Returns the text that was heard."""
        heard = self.heard_text()
        with self._lock:
            self._reset()
        return heard

    def finish_turn(self) -> None:
        """The turn ended and played out: its chunks are forgotten (the next turn starts its own clock)."""
        with self._lock:
            if self._position >= self._end:
                self._reset()


def _first_share(text: str, share: float) -> str:
    """The first share of a chunk's text, cut at a word (or, for Chinese, a character)."""
    if share >= 1.0 or not text:
        return text if share >= 1.0 else ""
    words = text.split()
    if len(words) > 1:
        return " ".join(words[:int(len(words) * share)])
    return text[:int(len(text) * share)]
