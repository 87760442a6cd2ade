"""Eyes of the lite engine: blinks and gaze, both done by resampling the warp map inside each eye's box, so the
pixels are the photo's own and the matte follows for free.

- A blink is the upper lid closing over the eye: the lid skin between the crease and the lid margin is stretched
  down to the closing edge, with the margin's lashes kept at their own thickness (no squash of the eye, no painted
  patch); at full closure the lash line meets the lower lid.
- Gaze: the iris moves inside the eye opening by a smooth displacement that is largest at the eye's centre and zero
  on its outline (the lids and corners stay put); saccades jump to a new point every 0.6-2.5 s.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar.core.types import FPS

from .draw import parabola, smoothstep, sorted_xy

UPPER_LID = ([36, 37, 38, 39], [42, 43, 44, 45])  # per eye: corner, upper lid, upper lid, corner
LOWER_LID = ([36, 41, 40, 39], [42, 47, 46, 45])
BROW = ([17, 18, 19, 20, 21], [22, 23, 24, 25, 26])
CREASE_SHARE = 0.6  # the lid's crease lies this share of the way from the lid margin up to the brow
LASH_IOD = 0.03  # the lid margin + lashes kept unstretched at the closing edge (face units)
LID_BLUR_IOD = 0.025  # blur of the closing lid's skin (face units)
GAZE_REACH = 0.22  # the largest gaze shift, as a share of the eye's half-width
BLINK_PROFILE = np.array([0.35, 0.85, 1.0, 0.75, 0.35, 0.1], np.float32)  # closure per frame of a ~240 ms blink


def blink_track(n: int, seed: int, start_frame: int = 0) -> np.ndarray:
    """(n,) eyelid closure 0..1: a blink (~200 ms) every 2-6 s, seeded; frames start_frame.. of that schedule (a
    reply's later sentences continue it instead of blinking at the same offset in every clip)."""
    rng = np.random.default_rng(seed)
    start = max(0, int(start_frame))
    n, closure = start + n, np.zeros(start + n, np.float32)
    t = int(rng.uniform(1.0, 3.0) * FPS)
    while t < n:
        span = closure[t: t + len(BLINK_PROFILE)]
        span[:] = np.maximum(span, BLINK_PROFILE[: len(span)])
        t += int(rng.uniform(2.0, 6.0) * FPS)
    return closure[start:]


def gaze_track(n: int, seed: int, start_frame: int = 0) -> np.ndarray:
    """(n, 2) gaze in -1..1 of GAZE_REACH (x: towards image-right, y: down): fixations near the camera with saccades
    every 0.6-2.5 s, each done in two frames (saccades last 30-60 ms); seeded, continued from start_frame."""
    rng = np.random.default_rng([seed, 7])
    start = max(0, int(start_frame))
    total = start + n
    gaze = np.zeros((total + 1, 2), np.float32)
    t, current = 0, np.zeros(2, np.float32)
    while t < total:
        hold = int(rng.uniform(0.6, 2.5) * FPS)
        gaze[t: t + hold] = current
        t += hold
        previous, current = current, np.clip(rng.normal(0, [0.5, 0.25]), -1, 1).astype(np.float32)
        if np.any(previous) and rng.uniform() < 0.45:  # about half the saccades away come back to the camera
            current = np.zeros(2, np.float32)
        if t < total:
            gaze[t] = 0.3 * previous + 0.7 * current
            t += 1
    return gaze[start:total]


@dataclass(frozen=True)
class EyeBox:
    """One eye in the output frame: its box (x0, y0, x1, y1) and the curves of its lids over the box's columns."""
    box: tuple[int, int, int, int]
    top: np.ndarray  # (w,) upper lid margin y per column
    bottom: np.ndarray  # (w,) lower lid y
    crease: np.ndarray  # (w,) the lid crease y
    inside: np.ndarray  # (w,) 1 between the corners, falling to 0 at them
    centre: np.ndarray  # (2,) the eye's centre
    half_size: tuple[float, float]  # half-width, half-height


def eye_box(target: np.ndarray, eye: int, frame_side: int, iod_px: float) -> EyeBox | None:
    """The eye's box and lid curves from the frame's vertices (None when the eye is off the frame or too small)."""
    upper, lower, brow = target[UPPER_LID[eye]], target[LOWER_LID[eye]], target[BROW[eye]]
    x0, x1 = int(np.floor(upper[:, 0].min())) - 1, int(np.ceil(upper[:, 0].max())) + 2
    brow_y = np.interp(np.arange(x0, x1), *sorted_xy(brow))
    y0 = int(np.floor(min(brow_y.min(), upper[:, 1].min()))) - 1
    y1 = int(np.ceil(lower[:, 1].max())) + 3
    if x0 < 0 or y0 < 0 or x1 > frame_side or y1 > frame_side or x1 - x0 < 4:
        return None
    xs = np.arange(x0, x1, dtype=np.float32)
    top, bottom = parabola(upper, xs), parabola(lower, xs)
    bottom = np.maximum(bottom, top)
    crease = top - CREASE_SHARE * np.maximum(top - brow_y, 0)
    span = max(float(upper[3, 0] - upper[0, 0]), 1.0)
    edge = np.minimum(xs - upper[0, 0], upper[3, 0] - xs) / span
    inside = smoothstep(edge / 0.08)
    centre = np.concatenate([upper, lower]).mean(0)
    half = (0.5 * span, max(0.5 * float(np.mean(bottom - top)), 1.0))
    return EyeBox((x0, y0, x1, y1), top, bottom, crease, inside, centre, half)


def _lid_rows(eye: EyeBox, ys: np.ndarray, closure: float, lash_px: float) -> np.ndarray:
    """Per output pixel of the box, the row it shows of the open eye: between the crease and the closing edge the
    lid skin stretched down (its last lash_px rows unstretched), elsewhere itself."""
    top, crease = eye.top[None, :], eye.crease[None, :]
    edge = top + closure * eye.inside[None, :] * (eye.bottom - eye.top)[None, :]
    lash = np.minimum(lash_px, np.maximum(top - crease, 0))
    stretched = crease + (ys - crease) * (top - lash - crease) / np.maximum(edge - lash - crease, 1e-3)
    rows = np.where(ys >= edge - lash, top - (edge - ys), stretched)
    return np.where((ys >= crease) & (ys < edge), rows, ys)


def _gaze_shift(eye: EyeBox, xs: np.ndarray, rows: np.ndarray, gaze: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (dx, dy) px at each (x, row): gaze * reach, tapering to 0 at the eye's outline."""
    half_w, half_h = eye.half_size
    rx = (xs[None, :] - eye.centre[0]) / half_w
    ry = (rows - eye.centre[1]) / (1.6 * half_h)
    weight = smoothstep((1.0 - np.sqrt(rx * rx + ry * ry)) / 0.55)
    inside_lids = (rows > eye.top[None, :]) & (rows < eye.bottom[None, :])
    weight = weight * inside_lids
    return weight * (gaze[0] * GAZE_REACH * half_w), weight * (gaze[1] * GAZE_REACH * half_h)


def move_eyes(pixel_map: np.ndarray, target: np.ndarray, iod_px: float, closure: float,
              gaze: np.ndarray) -> list[EyeBox]:
    """Resamples the warp map (S,S,2) in place inside both eyes' boxes: gaze, then the closing lids. Returns the
    boxes (for `soften_lids`)."""
    if closure <= 0.01 and not np.any(gaze):
        return []
    boxes = [box for box in (eye_box(target, eye, pixel_map.shape[0], iod_px) for eye in (0, 1)) if box is not None]
    for box in boxes:
        x0, y0, x1, y1 = box.box
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + np.zeros((1, x1 - x0), np.float32)
        rows = _lid_rows(box, ys, closure, LASH_IOD * iod_px) if closure > 0.01 else ys
        dx, dy = _gaze_shift(box, xs, rows, gaze)
        map_x = (xs[None, :] - dx - x0).astype(np.float32)
        map_y = (rows - dy - y0).astype(np.float32)
        roi = np.ascontiguousarray(pixel_map[y0:y1, x0:x1])
        pixel_map[y0:y1, x0:x1] = cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return boxes


def soften_lids(frame: np.ndarray, boxes: list[EyeBox], closure: float, iod_px: float) -> None:
    """Smooths the stretched lid skin of closing eyes in place: stretched, the lid's folds and lashes would streak;
    a closed lid is smooth skin, darkening towards its lash line."""
    if closure <= 0.01:
        return
    sigma = LID_BLUR_IOD * iod_px
    lash = LASH_IOD * iod_px
    for box in boxes:
        x0, y0, x1, y1 = box.box
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        soft = cv2.GaussianBlur(roi, (0, 0), sigma)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        edge = box.top + closure * box.inside * (box.bottom - box.top)
        lid = smoothstep((ys - box.crease) / np.maximum(box.top - box.crease, 1.0))
        lid = lid * smoothstep((edge - lash - ys) / 1.5) * (closure * box.inside)[None, :]
        frame[y0:y1, x0:x1] = np.clip(roi + (soft - roi) * lid[..., None] + 0.5, 0, 255).astype(np.uint8)
