"""Speech -> mouth: per-frame jaw opening and lip width at 25 fps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.core.types import FPS, Audio

@dataclass(frozen=True)
class MouthTrack:
    opening: np.ndarray  # (n,) 0..1: jaw drop as a fraction of MAX_OPEN_IOD
    width: np.ndarray  # (n,) -1..1: rounded (-) .. spread (+) lips


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


def mouth_track(speech: Audio, n: int) -> MouthTrack:
    """Speech -> per-frame mouth opening and width at 25 fps: RMS in dB relative to the clip's loud frames (closed
    below a gate), smoothed with a fast attack and a slower release; width from the high-frequency share."""
    sr = speech.sample_rate
    if sr % FPS:
        from avatar.core.media import resample

        speech, sr = resample(speech, 16000), 16000
    ms, hi = _frame_energy(speech.samples, sr // FPS, n)
    # 3-frame window (80 ms) centred on each frame
    ms = np.convolve(np.pad(ms, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    db = 10 * np.log10(np.maximum(ms, 1e-12))
    loud = np.percentile(db, 95) if n else 0.0
    floor = max(loud - 32.0, -55.0)
    target = np.clip((db - floor) / max(loud - floor, 1e-6), 0, 1) ** 1.3
    target[db < max(floor + 4.0, -50.0)] = 0.0  # silence gate: the mouth closes
    opening = _attack_release(target, attack=0.75, release=0.45)
    voiced = target > 0.05
    z = np.log(np.maximum(hi, 1e-6))
    centre = np.median(z[voiced]) if voiced.any() else 0.0
    width = np.clip(np.tanh((z - centre) * 0.8), -1, 1) * (opening > 0.02)
    return MouthTrack(opening.astype(np.float32), _attack_release(width, 0.5, 0.3).astype(np.float32))

