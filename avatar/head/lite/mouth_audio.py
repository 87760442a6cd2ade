"""Lip shape from the sound alone (speech that did not come from our own TTS): the lips' width (rounded .. spread)
from the vowel's formants, and a press from the short dips of loudness a closing mouth makes.

Formants: per 40 ms video frame, a 12-pole LPC of a 25.6 ms window (10 kHz, pre-emphasised) gives F1 and F2; both
are taken relative to the clip's median over its voiced frames, so a speaker's voice and a microphone cancel. F2 is
the lips' best audible trace (measured on our TTS voices, a man in English and a woman in Chinese, relative to
their medians: /i/ +0.17 / +0.34, /o/ -0.44 / -0.33, /u/ -0.10 / -0.09 in log Hz), F1 the jaw's (/a/ +0.32).
Seven numbers map them to width (assets/templates/mouth_from_audio.npz, fitted by scripts/make_mouth_model.py on
our own TTS speech, whose visemes give the answer; without the file, width follows F2 by a fixed rule).

Press: a frame at least DIP_CLOSED below both the syllables before and after it is a closure. Loudness cannot tell
a p, b or m from a t or k (measured on our voices: 17% of p/b/m frames found, and 6% of the others), so every short
closure presses the lips; the loudness-driven opening nearly closes them there anyway.
"""
from __future__ import annotations

import functools

import numpy as np

from avatar.core.paths import ASSETS_DIR

MODEL_PATH = ASSETS_DIR / "templates" / "mouth_from_audio.npz"
LPC_RATE = 10000  # formants of interest lie below 4 kHz
LPC_ORDER = 12
WINDOW = 256  # samples at LPC_RATE
FORMANT_RANGE_HZ = (200.0, 4000.0)
MAX_BANDWIDTH_HZ = 400.0  # wider resonances are not formants
DIP_REACH = 3  # frames either side in which a loudness dip is measured
WIDTH_GAIN = 2.0  # a regression's answers shrink towards the mean (r ~ 0.3 on unheard voices): lips need contrast
DIP_CLOSED = (0.2, 0.2)  # a dip this deep (loudness, 0..1) starts to press the lips, fully this much deeper
WIDTH_FEATURES = ("f2", "f1", "f2^2", "f1^2", "f1*f2", "voiced", "1")


def _frames_10k(samples_16k: np.ndarray, n: int) -> np.ndarray:
    """(n, WINDOW) pre-emphasised, Hamming-windowed 10 kHz frames centred on each video frame."""
    from scipy.signal import lfilter, resample_poly

    x = lfilter([1.0, -0.9], [1.0], resample_poly(samples_16k.astype(np.float64), 5, 8))
    hop = LPC_RATE // 25
    padded = np.pad(x, (WINDOW, n * hop + WINDOW))
    centres = WINDOW + np.arange(n) * hop + hop // 2
    return padded[centres[:, None] - WINDOW // 2 + np.arange(WINDOW)[None]] * np.hamming(WINDOW)


def _lpc(frames: np.ndarray) -> np.ndarray:
    """(n, LPC_ORDER + 1) prediction polynomials of all frames at once (autocorrelation, Levinson-Durbin)."""
    r = np.stack([(frames[:, :WINDOW - k] * frames[:, k:]).sum(1) for k in range(LPC_ORDER + 1)], 1)
    r[:, 0] = r[:, 0] * (1 + 1e-9) + 1e-12  # white-noise floor: silent frames stay stable
    a = np.zeros_like(r)
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for k in range(1, LPC_ORDER + 1):
        reflection = -(r[:, k] + (a[:, 1:k] * r[:, k - 1:0:-1]).sum(1)) / error
        a[:, 1:k] = a[:, 1:k] + reflection[:, None] * a[:, k - 1:0:-1]
        a[:, k] = reflection
        error = error * (1 - reflection ** 2)
    return a


def formants(samples_16k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(F1, F2) in Hz per video frame (NaN where fewer than two resonances qualify)."""
    a = _lpc(_frames_10k(samples_16k, n))
    companion = np.zeros((n, LPC_ORDER, LPC_ORDER))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, LPC_ORDER), np.arange(LPC_ORDER - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    hz = np.angle(roots) * LPC_RATE / (2 * np.pi)
    bandwidth = -np.log(np.maximum(np.abs(roots), 1e-9)) * LPC_RATE / np.pi
    valid = (hz > FORMANT_RANGE_HZ[0]) & (hz < FORMANT_RANGE_HZ[1]) & (bandwidth < MAX_BANDWIDTH_HZ)
    ordered = np.sort(np.where(valid, hz, np.inf), axis=1)
    f1, f2 = ordered[:, 0], ordered[:, 1]
    return np.where(np.isfinite(f1), f1, np.nan), np.where(np.isfinite(f2), f2, np.nan)


def _relative(values: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """log(values) minus the clip's median over voiced frames; 0 where unknown."""
    logs = np.log(np.where(np.isnan(values), 1.0, values))
    known = voiced & ~np.isnan(values)
    centre = np.median(logs[known]) if known.sum() > 5 else 0.0
    return np.where(known, logs - centre, 0.0)


def _dips(loudness: np.ndarray) -> np.ndarray:
    """How far each frame lies below the louder of its neighbourhoods before and after (0..1): a closure between
    two syllables, not the end of a phrase."""
    padded = np.pad(loudness, DIP_REACH, mode="edge")
    n = len(loudness)
    before = np.max([padded[DIP_REACH - k: DIP_REACH - k + n] for k in range(1, DIP_REACH + 1)], axis=0)
    after = np.max([padded[DIP_REACH + k: DIP_REACH + k + n] for k in range(1, DIP_REACH + 1)], axis=0)
    return np.clip(np.minimum(before, after) - loudness, 0, 1)


def features(samples_16k: np.ndarray, loudness: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame, every named feature of WIDTH_FEATURES, and the loudness dips."""
    n = len(loudness)
    f1_hz, f2_hz = formants(samples_16k, n)
    voiced = (loudness > 0.1).astype(np.float64)
    f1, f2 = _relative(f1_hz, voiced > 0) * voiced, _relative(f2_hz, voiced > 0) * voiced
    return {"f1": f1, "f2": f2, "f2^2": f2 * f2, "f1^2": f1 * f1, "f1*f2": f1 * f2, "voiced": voiced,
            "dip": _dips(loudness), "1": np.ones(n)}


def design(named: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return np.stack([named[name] for name in names], axis=1)


@functools.lru_cache(maxsize=1)
def _width_model() -> np.ndarray | None:
    if not MODEL_PATH.is_file():
        return None
    with np.load(MODEL_PATH) as model:
        width = model["width"]
    return width if width.shape == (len(WIDTH_FEATURES),) else None


def lip_shape(samples_16k: np.ndarray, loudness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(width -1..1, press 0..1) per frame from 16 kHz speech and its loudness track."""
    named = features(samples_16k, loudness)
    model = _width_model()
    width = np.tanh(4.0 * named["f2"]) if model is None else WIDTH_GAIN * (design(named, WIDTH_FEATURES) @ model)
    press = np.clip((named["dip"] - DIP_CLOSED[0]) / DIP_CLOSED[1], 0, 1)
    return np.clip(width, -1, 1), press
