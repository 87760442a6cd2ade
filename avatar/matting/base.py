"""What the matting stage and its backends share: compositing on a colour, temporal smoothing of a clip's matte,
and the face prior that keeps the face opaque."""
from __future__ import annotations

import cv2
import numpy as np

from avatar.core.types import check_frames

FEATHER_PER_256 = 0.8  # Gaussian sigma of the edge feather, in px per 256 px of frame side
EMA_KEEP = 0.35  # share of the previous frame's matte kept in each new one (temporal smoothing)


def composite(frames: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int],
              background: np.ndarray | None = None) -> np.ndarray:
    """frames * alpha + colour * (1 - alpha), rounded -> uint8 (B,H,W,3); background: the colour as an (H,W,3)
    image when the caller keeps one."""
    check_frames(frames)
    assert alpha.shape == frames.shape[:3], f"alpha {alpha.shape} does not match frames {frames.shape}"
    if background is None:
        background = np.full((*frames.shape[1:3], 3), colour, np.uint8)
    out = np.empty_like(frames)
    for i in range(len(frames)):
        weight = np.ascontiguousarray(alpha[i], dtype=np.float32)
        out[i] = cv2.blendLinear(np.ascontiguousarray(frames[i]), background, weight, 1.0 - weight)
    return out


class AlphaSmoother:
    """Per clip: an EMA of the matte across frames (no flicker) and a small Gaussian feather (no hard edge)."""

    def __init__(self, keep: float = EMA_KEEP) -> None:
        self.keep = keep
        self._previous: np.ndarray | None = None

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        out = np.empty_like(alpha)
        sigma = FEATHER_PER_256 * alpha.shape[1] / 256
        for i, a in enumerate(alpha):
            a = cv2.GaussianBlur(a, (0, 0), sigma)
            if self._previous is not None and self._previous.shape == a.shape:
                a = cv2.addWeighted(a, 1 - self.keep, self._previous, self.keep, 0.0)
            out[i] = self._previous = a
        return out


def with_face_prior(alpha: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """alpha (H,W) made opaque over the face (the convex hull of its 68 landmarks, softened by 1 px): a segmenter may
    leave holes in a face (glasses, beards, odd light), but the landmarks say where the face is for certain."""
    hull = np.zeros(alpha.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(landmarks).astype(np.int32)), 255, cv2.LINE_AA)
    prior = cv2.GaussianBlur(hull.astype(np.float32) * (1 / 255.0), (0, 0), 1.0)
    return np.maximum(alpha, prior)
