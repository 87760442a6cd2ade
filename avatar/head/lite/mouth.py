"""Speech -> mouth: per frame (25 fps) the jaw's opening, the lips' width (rounded .. spread) and a lip press (the
closure of p, b, m).

Two sources: the visemes of our own TTS (it knows what it said and when: Audio.visemes), turned into mouth shapes
with coarticulation and scaled by the speech's loudness; otherwise the audio alone (loudness -> opening, the spectrum
-> width and press, see `mouth_track`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.core.types import FPS, Audio, Visemes

from .mouth_audio import lip_shape

# each viseme's mouth: (jaw opening 0..1, lip width -1 rounded .. +1 spread, lip press 0..1)
VISEME_SHAPES: dict[str, tuple[float, float, float]] = {
    "sil": (0.0, 0.0, 0.0), "PP": (0.0, 0.0, 1.0), "FF": (0.15, 0.25, 0.0), "TH": (0.25, 0.2, 0.0),
    "DD": (0.3, 0.15, 0.0), "kk": (0.4, 0.0, 0.0), "CH": (0.28, -0.6, 0.0), "SS": (0.15, 0.55, 0.0),
    "nn": (0.28, 0.1, 0.0), "RR": (0.3, -0.5, 0.0), "aa": (1.0, 0.15, 0.0), "E": (0.7, 0.5, 0.0),
    "ih": (0.45, 0.85, 0.0), "oh": (0.75, -0.7, 0.0), "ou": (0.4, -1.0, 0.0),
}
LEAD_S = 0.04  # the lips shape a sound slightly before it is heard
COARTICULATION_S = 0.05  # half-width of the window each frame's shape is averaged over (neighbours blend)
GRID_HZ = 200  # visemes are laid on a 5 ms grid before the window is applied
PRESS_GAIN = 2.5  # a p/b/m filling 40% of the window closes the lips fully (they are short but always close)


@dataclass(frozen=True)
class MouthTrack:
    opening: np.ndarray  # (n,) 0..1: jaw drop as a fraction of MAX_OPEN_IOD
    width: np.ndarray  # (n,) -1..1: rounded (-) .. spread (+) lips
    press: np.ndarray  # (n,) 0..1: lips pressed together (p, b, m)


def _frame_energy(samples: np.ndarray, hop: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 1/25 s frame: mean square and the share of energy above ~2.5 kHz (via a first difference), in blocks."""
    ms, hi = np.zeros(n), np.zeros(n)
    block = 2048  # frames per block: bounds the temporaries for long audio
    for start in range(0, n, block):
        stop = min(n, start + block)
        seg = samples[start * hop: stop * hop].astype(np.float64)
        seg = np.pad(seg, (0, (stop - start) * hop - len(seg)))
        frames = seg.reshape(stop - start, hop)
        ms[start:stop] = np.mean(frames ** 2, axis=1)
        diff = np.diff(frames, axis=1, prepend=frames[:, :1])
        hi[start:stop] = np.mean(diff ** 2, axis=1) / np.maximum(4 * ms[start:stop], 1e-12)
    return ms, hi


def _attack_release(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    y, cur = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        cur += (attack if v > cur else release) * (v - cur)
        y[i] = cur
    return y


def _at_16k(speech: Audio) -> Audio:
    if speech.sample_rate == 16000:
        return speech
    from avatar.core.media import resample

    return resample(speech, 16000)


def _loudness(speech: Audio, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: loudness 0..1 (RMS in dB relative to the clip's loud frames, 0 below a silence gate) and the
    share of energy above ~2.5 kHz. speech: 16 kHz."""
    ms, hi = _frame_energy(speech.samples, speech.sample_rate // FPS, n)
    # 3-frame window (80 ms) centred on each frame
    ms = np.convolve(np.pad(ms, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    db = 10 * np.log10(np.maximum(ms, 1e-12))
    loud = np.percentile(db, 95) if n else 0.0
    floor = max(loud - 32.0, -55.0)
    target = np.clip((db - floor) / max(loud - floor, 1e-6), 0, 1) ** 1.3
    target[db < max(floor + 4.0, -50.0)] = 0.0  # silence gate: the mouth closes
    return target, hi


def mouth_track(speech: Audio, n: int) -> MouthTrack:
    """Speech -> per-frame mouth at 25 fps: from the visemes when the speech has them, else from the audio alone:
    the opening follows loudness (fast attack, slower release), width the formants, press the dips (mouth_audio.py)."""
    at_16k = _at_16k(speech)
    loudness, _ = _loudness(at_16k, n)
    if speech.visemes is not None and len(speech.visemes):
        return viseme_track(speech.visemes, n, loudness)
    opening = _attack_release(loudness, attack=0.75, release=0.45)
    width, press = lip_shape(at_16k.samples, loudness)
    width = _attack_release(width * (opening > 0.02), 0.6, 0.4)
    opening = opening * (1 - press)
    return MouthTrack(opening.astype(np.float32), width.astype(np.float32), press.astype(np.float32))


def _viseme_grid(visemes: Visemes, n: int) -> np.ndarray:
    """(samples, 4) on a GRID_HZ grid covering n frames (+ the lead): opening, width, press, and 1 where p/b/m."""
    length = int(np.ceil((n / FPS + LEAD_S + COARTICULATION_S) * GRID_HZ)) + 1
    grid = np.zeros((length, 4), np.float32)
    starts = np.clip(np.round(visemes.start_s * GRID_HZ).astype(int), 0, length)
    ends = np.clip(np.round(visemes.end_s * GRID_HZ).astype(int), 0, length)
    for start, end, label in zip(starts, ends, visemes.labels):
        grid[start:end] = (*VISEME_SHAPES[label][:2], 0.0, float(label == "PP"))
    return grid


def viseme_track(visemes: Visemes, n: int, loudness: np.ndarray) -> MouthTrack:
    """Visemes -> per-frame mouth: each frame's shape is the mean over a window around it (coarticulation), a p/b/m
    in the window presses the lips shut, and loud syllables open wider than quiet ones."""
    grid = _viseme_grid(visemes, n)
    half = int(round(COARTICULATION_S * GRID_HZ))
    kernel = np.ones(2 * half + 1, np.float32) / (2 * half + 1)
    smooth = np.stack([np.convolve(np.pad(grid[:, k], half, mode="edge"), kernel, "valid") for k in range(4)], 1)
    at = np.clip(np.round(((np.arange(n) + 0.5) / FPS + LEAD_S) * GRID_HZ).astype(int), 0, len(grid) - 1)
    opening, width, _, bilabial = smooth[at].T
    press = np.clip(bilabial * PRESS_GAIN, 0, 1)
    opening = opening * (0.6 + 0.4 * loudness) * (1 - press)
    return MouthTrack(opening.astype(np.float32), np.clip(width, -1, 1).astype(np.float32), press.astype(np.float32))

