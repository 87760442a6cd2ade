"""Is the speech the microphone hears the avatar's own voice coming back from the speakers?

The browser's echo canceller removes most of it; what is left is compared with what the avatar played in the last
seconds: the echo is a delayed, quieter, filtered copy of it, so its normalised cross-correlation with that sound is
high at some lag, while the user's own voice is unrelated to it."""
from __future__ import annotations

import threading
from collections import deque

import numpy as np
from scipy.signal import fftconvolve

from avatar.live.vad import SAMPLE_RATE

REFERENCE_S = 2.0  # the avatar's sound that an echo could still come from (speaker + room + network delays)


def _to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Linear, piece by piece as the avatar's sound goes out in 20 ms frames: a filter per piece would add a seam
    every 20 ms to the reference (whole chunks go through avatar.core.media.resample)."""
    if sample_rate == SAMPLE_RATE:
        return samples.astype(np.float32)
    n = int(round(len(samples) * SAMPLE_RATE / sample_rate))
    return np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples).astype(np.float32)


def similarity(mic: np.ndarray, reference: np.ndarray) -> float:
    """The largest normalised cross-correlation of mic against any stretch of reference (both 16 kHz), in [0, 1]."""
    if len(reference) < len(mic) or not len(mic):
        return 0.0
    x = mic - mic.mean()
    r = reference - reference.mean()
    dots = fftconvolve(r, x[::-1], mode="valid")  # dot(x, r[k:k+n]) for every lag k
    energy = np.cumsum(np.concatenate([[0.0], r.astype(np.float64) ** 2]))
    norms = np.sqrt(np.maximum(energy[len(x):] - energy[:-len(x)], 1e-12)) * (np.linalg.norm(x) + 1e-9)
    return float(np.max(np.abs(dots) / norms))


class EchoGuard:
    """Remembers what the avatar played (thread-safe: the audio track writes, the microphone reader asks)."""

    def __init__(self, threshold: float, reference_s: float = REFERENCE_S) -> None:
        self.threshold = threshold
        self._played: deque[np.ndarray] = deque()
        self._max = int(reference_s * SAMPLE_RATE)
        self._size = 0
        self._lock = threading.Lock()

    def played(self, samples: np.ndarray, sample_rate: int) -> None:
        with self._lock:
            self._played.append(_to_16k(samples, sample_rate))
            self._size += len(self._played[-1])
            while self._size - len(self._played[0]) >= self._max:
                self._size -= len(self._played.popleft())

    def clear(self) -> None:
        with self._lock:
            self._played.clear()
            self._size = 0

    def is_echo(self, mic: np.ndarray) -> bool:
        with self._lock:
            reference = np.concatenate(list(self._played)) if self._played else np.zeros(0, np.float32)
        return similarity(mic, reference) >= self.threshold
