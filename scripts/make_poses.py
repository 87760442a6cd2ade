"""Writes the head-pose library assets/poses/<name>.npy: float32 (T, 6) = yaw, pitch, roll (degrees) + translation
x, y, z (EAT's t units: x/y ~ fraction of half the crop, so small: about +-0.05) at 25 fps.

Every sequence is synthetic (no recorded data): per channel a sum of a few low-frequency sinusoids with random
phases plus Gaussian-filtered white noise, all from a fixed seed, so the files are reproducible:

    .venv/bin/python scripts/make_poses.py            # rewrites assets/poses/*.npy
    .venv/bin/python scripts/make_poses.py --check    # verifies the committed files match

avatar/head/poses.py loops a sequence by ping-pong (forward then backward), so no seam jump is possible and the
sequences need not start and end at the same pose.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

FPS = 25
DURATION_S = 12.0
SEED = 20261127
OUT_DIR = Path(__file__).resolve().parents[1] / "assets" / "poses"


@dataclass(frozen=True)
class Style:
    amplitude: tuple[float, ...]  # peak size per channel: yaw, pitch, roll (deg), tx, ty, tz (t units)
    max_hz: float  # highest sinusoid frequency: the liveliness of the motion
    noise_share: float  # part of the motion that is filtered noise rather than sinusoids
    nod_hz: float = 0.0  # > 0: an extra pitch oscillation (nodding) at this rate, amplitude = pitch amplitude


STYLES: dict[str, Style] = {
    "still": Style((0.4, 0.3, 0.25, 0.002, 0.002, 0.001), max_hz=0.25, noise_share=0.3),  # breathing only
    "nod": Style((1.0, 3.0, 0.8, 0.004, 0.010, 0.003), max_hz=0.3, noise_share=0.2, nod_hz=0.6),
    "talking": Style((4.0, 2.5, 2.5, 0.020, 0.015, 0.008), max_hz=0.5, noise_share=0.35),
    "lively": Style((8.0, 4.0, 5.0, 0.045, 0.030, 0.015), max_hz=0.7, noise_share=0.35),
}


def _channel(rng: np.random.Generator, n: int, style: Style) -> np.ndarray:
    """One zero-mean channel with peak |value| = 1: sinusoids below style.max_hz plus smoothed noise."""
    t = np.arange(n) / FPS
    freqs = rng.uniform(0.05, style.max_hz, size=4)
    weights = rng.uniform(0.4, 1.0, size=4)
    sines = sum(w * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f, w in zip(freqs, weights))
    noise = gaussian_filter1d(rng.standard_normal(n), sigma=FPS / (2 * np.pi * style.max_hz))
    mix = (1 - style.noise_share) * sines / np.abs(sines).max() + style.noise_share * noise / np.abs(noise).max()
    mix -= mix.mean()
    return mix / np.abs(mix).max()


def make_sequence(name: str, style: Style, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    n = int(DURATION_S * FPS)
    seq = np.stack([a * _channel(rng, n, style) for a in style.amplitude], axis=1)
    if style.nod_hz:
        t = np.arange(n) / FPS
        envelope = 0.5 + 0.5 * np.abs(np.sin(np.pi * t / 4.0))  # nods come in gentle groups
        seq[:, 1] = 0.4 * seq[:, 1] + style.amplitude[1] * envelope * np.sin(2 * np.pi * style.nod_hz * t)
        seq[:, 4] += 0.003 * np.sin(2 * np.pi * style.nod_hz * t)  # the head dips a little with each nod
    return seq.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    for name, style in STYLES.items():
        seq, path = make_sequence(name, style), args.out / f"{name}.npy"
        if args.check:
            same = path.is_file() and np.array_equal(np.load(path), seq)
            ok &= same
            print(f"{path.name}: {'ok' if same else 'DIFFERS'}")
        else:
            np.save(path, seq)
            print(f"{path.name}: {seq.shape}, {path.stat().st_size} bytes, peak {np.abs(seq).max(axis=0).round(3)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
