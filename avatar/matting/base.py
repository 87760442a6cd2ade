"""What the matting stage and its backends share: compositing on a colour, temporal smoothing of a clip's matte,
the face prior that keeps the face opaque, and the clean-up of a still's soft edge (`clean_edge`)."""
from __future__ import annotations

import cv2
import numpy as np

from avatar.core.types import check_frames

FEATHER_PER_256 = 0.8  # Gaussian sigma of the edge feather, in px per 256 px of frame side
EMA_KEEP = 0.35  # share of the previous frame's matte kept in each new one (temporal smoothing)
GATHER_PER_256 = 6.0  # Gaussian sigma (px per 256 px of side) over which edge colours are gathered
EDGE_REACH_PER_256 = 16.0  # how far into the matte (px per 256 px of side) its edge may be corrected by colour
MIN_CONTRAST = 60.0  # foreground and background colours closer than this (RGB distance) leave the matte as it is


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


def _gathered(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """The mean colour of the weighted pixels near each pixel (a normalised convolution)."""
    total = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
    return cv2.GaussianBlur(image * weight[..., None], (0, 0), sigma) / np.maximum(total, 1e-4)


def clean_edge(image: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A still's (H,W,3) uint8 photo and (H,W) matte -> (foreground colours uint8, matte) with the soft edge freed
    of the old backdrop. A segmenter's edge is a blur: over the backdrop beside hair it still says 0.3, so the
    backdrop's colour comes along as a pale fringe on any new colour. At each edge pixel the nearby backdrop colour B
    and the nearby foreground colour F are gathered; the matte becomes the pixel's position between them (I = a F +
    (1 - a) B, solved for a) where they differ enough to tell, and the pixel's foreground colour is solved from it."""
    img = image.astype(np.float32)
    sigma = GATHER_PER_256 * image.shape[0] / 256
    back = _gathered(img, (alpha < 0.05).astype(np.float32), sigma)
    fore = _gathered(img, (alpha > 0.95).astype(np.float32), sigma)
    span = fore - back
    contrast = np.linalg.norm(span, axis=2)
    by_colour = np.clip(((img - back) * span).sum(2) / np.maximum(contrast ** 2, 1e-3), 0, 1)
    by_colour = cv2.GaussianBlur(by_colour.astype(np.float32), (0, 0), sigma / GATHER_PER_256)  # no pixel noise
    edge = np.clip((0.99 - alpha) / 0.15, 0, 1) * (alpha > 0.01)  # the soft edge, fading out into the solid part
    # trusted where the two colours differ enough, and only near the backdrop (light strands deeper in the hair
    # can look like the backdrop: there the segmenter's matte stays)
    not_back = (alpha >= 0.05).astype(np.uint8)
    depth = cv2.distanceTransform(not_back, cv2.DIST_L2, 3) / (image.shape[0] / 256)
    near = np.clip(2.0 * (1.0 - depth / EDGE_REACH_PER_256), 0, 1)  # fully up to half the reach, then fading
    trust = np.clip((contrast - MIN_CONTRAST) / MIN_CONTRAST, 0, 1) * near * edge
    matte = (alpha * (1 - trust) + np.minimum(alpha, by_colour) * trust).astype(np.float32)
    a = matte[..., None]
    solved = (img - (1 - a) * back) / np.maximum(a, 1e-3)
    weight = np.clip((a - 0.1) / 0.5, 0, 1)  # a faint pixel says little about its colour: the foreground's nearby
    colours = img + (weight * solved + (1 - weight) * fore - img) * edge[..., None]
    return np.clip(colours + 0.5, 0, 255).astype(np.uint8), matte
