"""Matting: foreground alpha of portrait frames and compositing on a solid colour.

Backends: "selfie" = MediaPipe selfie segmentation (packaged with mediapipe, offline, ~10 ms a frame on CPU), edges
snapped to the image with a guided filter; "modnet" = MODNet ONNX (avatar/modnet.py, user-supplied weights), chosen by
"auto" when its file exists under weights_dir; "none" = fully opaque (no matting).

For a clip, `clip()` keeps the matte temporally stable (an exponential moving average across frames) and its edge
soft (a small feather). The lite engine does better still: it mattes the photo once and warps that matte with the
frame (`LiteEngine.frames_with_alpha`), which render.py uses when the engine offers it.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from .config import CHOICES, AvatarConfig
from .errors import BackendUnavailable
from .types import check_frames

log = logging.getLogger("avatar")

BACKENDS = CHOICES["matting.backend"]
EMA_KEEP = 0.35  # share of the previous frame's matte kept in each new one (temporal smoothing)
FEATHER_PER_256 = 0.8  # Gaussian sigma of the edge feather, in px per 256 px of frame side


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

class SelfieSegmenter:
    """MediaPipe's general selfie model (256x256 input) + a guided filter that snaps the soft mask to image edges."""

    def __init__(self) -> None:
        try:
            from mediapipe.python.solutions import selfie_segmentation
        except ImportError as e:  # pragma: no cover - mediapipe is in requirements.txt
            raise BackendUnavailable(f"selfie matting needs mediapipe: {e}") from None
        self._model = selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._lock = threading.Lock()  # a MediaPipe graph runs one image at a time

    def alpha(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty(frames.shape[:3], np.float32)
        with self._lock:
            for i, frame in enumerate(frames):
                mask = self._model.process(np.ascontiguousarray(frame)).segmentation_mask
                out[i] = refine_edges(frame, np.asarray(mask, np.float32))
        return out


def refine_edges(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Guided filter (He et al.) with the grey image as guide, from box filters: the low-resolution mask's blocky
    edge follows the hair and shoulder contours. ~4 ms at 512 px."""
    radius = max(2, frame.shape[0] // 128)
    eps = 1e-3  # regularisation (guide in 0..1): larger = smoother, less edge-following
    guide = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1 / 255.0)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(mask)
    cov_ip = box(guide * mask) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return np.clip(box(a) * guide + box(b), 0.0, 1.0)


class Matting:
    """The matting stage: `Matting.load(cfg)`, then `alpha(frames)`, `composite(frames, alpha, colour)`, `clip(...)`."""

    def __init__(self, backend: str, segmenter=None, batch_size: int = 8, fallback_reason: str | None = None) -> None:
        self.backend = backend
        self.batch_size = max(1, batch_size)
        self.fallback_reason = fallback_reason
        self._segmenter = segmenter
        self._backgrounds: dict[tuple, np.ndarray] = {}

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "Matting":
        backend = cfg.matting.backend
        if backend not in BACKENDS:
            raise BackendUnavailable(f"unknown matting backend {backend!r}; use one of: {', '.join(BACKENDS)}")
        if backend == "none":
            return cls("none")
        reason = None
        if backend in ("auto", "modnet"):
            modnet, reason = _load_modnet(cfg)
            if modnet is not None:
                return cls("modnet", modnet, cfg.matting.batch_size)
            if backend == "modnet":
                log.warning("matting: %s; falling back to selfie segmentation", reason)
        return cls("selfie", SelfieSegmenter(), cfg.matting.batch_size, fallback_reason=reason)

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def alpha(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B,H,W,3) RGB -> float32 (B,H,W) alpha in [0,1] (1 = person), frame by frame (no smoothing)."""
        check_frames(frames)
        if not self.enabled:
            return np.ones(frames.shape[:3], np.float32)
        parts = [self._segmenter.alpha(frames[i:i + self.batch_size]) for i in range(0, len(frames), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def composite(self, frames: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
        """frames * alpha + colour * (1 - alpha) -> uint8 (B,H,W,3)."""
        return composite(frames, alpha, colour, self._background(frames.shape[1:3], colour))

    def clip(self, batches: Iterable[np.ndarray], colour: tuple[int, int, int]) -> Iterator[np.ndarray]:
        """Composites a stream of frame batches with a temporally smoothed, feathered matte (constant memory)."""
        smoother = AlphaSmoother()
        for frames in batches:
            yield self.composite(frames, smoother(self.alpha(frames)), colour)

    def _background(self, shape: tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
        key = (*shape, *colour)
        if key not in self._backgrounds:
            self._backgrounds = {key: np.full((*shape, 3), colour, np.uint8)}
        return self._backgrounds[key]


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


def _load_modnet(cfg: AvatarConfig):
    """(ModnetMatting or None, why not)."""
    path = cfg.weights_path(cfg.matting.modnet_path)
    if not Path(path).is_file():
        return None, f"MODNet weights not found at {path}"
    try:
        from .modnet import ModnetMatting
    except ImportError as e:
        log.info("matting: MODNet weights found but avatar.modnet is unavailable (%s); using selfie segmentation", e)
        return None, f"MODNet runner unavailable: {e}"
    return ModnetMatting.load(path, cfg.matting.batch_size), None
