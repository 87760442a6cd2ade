"""The photo's own expression, taken out: a smiling (or frowning, or open-mouthed) photo is brought to a relaxed,
closed-mouth face before any emotion or speech is applied, so that "sad" on a smiling photo reads as sad rather than
as a worried smile.

Two things are measured on the photo's landmarks, in face units (inter-ocular distances):
- the smile, per side: how far each mouth corner lies above the middle of the (closed) lip line, in units of the
  happy offsets' corner lift; the happy offsets scaled by minus that amount take it out (corners down and in,
  cheeks and lower lids down with them);
- the inner lips' gap (teeth showing): closed by bringing the upper lip down a little and the lower lip up; the
  photo's own mouth inside is painted over with the lips' inner colours (`closed_lips`), so the closed mouth shows a
  lip line, not teeth squeezed into a bright seam (the open mouth is painted anew each frame: cavity.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .draw import smooth_curve, smoothstep
from .topology import LOWER_INNER, MIRROR, N_FACE, UPPER_INNER, face_frame, face_units

# the smile direction: the happy offsets at gain 1 for the image-left side (mirrored onto the right)
SMILE_UNITS = {48: (-0.06, -0.10), 60: (-0.05, -0.08), 49: (-0.02, -0.05), 59: (-0.02, -0.03), 50: (0, -0.02),
               61: (-0.01, -0.03), 67: (-0.01, -0.02), 68: (-0.01, -0.05), 70: (-0.03, -0.06), 40: (0, -0.025),
               41: (0, -0.025), 36: (0, -0.01), 17: (0, -0.02), 19: (0, -0.02), 21: (0, -0.015)}
SMILE_CORNER_DV = 0.10  # corner lift of one unit of SMILE_UNITS
RELAXED_CORNER_DV = 0.01  # a relaxed mouth's corners sit about level with the middle of the closed lip line
SMILE_RANGE = (-1.0, 2.5)  # the most smile (or frown, < 0) that is taken out
NARROW_SHARE = 0.6  # a smile widens the mouth less than the happy offsets do: only this share is narrowed back
UPPER_SHARE = 0.35  # closing the lips: the upper lip comes down this share of the gap, the lower lip up the rest
LIP_PAIRS = [(61, 67, 50, 58), (62, 66, 51, 57), (63, 65, 52, 56)]  # inner upper, inner lower, outer upper, outer lower


@dataclass(frozen=True)
class PhotoExpression:
    smile: tuple[float, float]  # image-left, image-right, in units of SMILE_UNITS (< 0: the corners turn down)
    gap_iod: float  # the inner lips' gap at the centre (0: closed)


def measure(pts: np.ndarray) -> PhotoExpression:
    """The photo's smile and lip gap from its 68 landmarks (crop pixels)."""
    _, v, iod = face_frame(pts)
    gap = max(0.0, float(np.dot(pts[66] - pts[62], v)))
    closed_line = float(np.dot(pts[62], v)) + UPPER_SHARE * gap
    lifts = [(float(np.dot(pts[corner], v)) - closed_line) / iod for corner in (48, 54)]
    smile = tuple(float(np.clip((RELAXED_CORNER_DV - lift) / SMILE_CORNER_DV, *SMILE_RANGE)) for lift in lifts)
    return PhotoExpression(smile, gap / iod)  # type: ignore[arg-type]


def _smile_units(left: float, right: float) -> np.ndarray:
    """The smile direction below the brows, each side scaled by its own amount (a lopsided smile is taken out as it
    is). The brows stay: they barely move with a smile, and moving them would drag the forehead and hair along."""
    lower_face = {i: shift for i, shift in SMILE_UNITS.items() if not 17 <= i <= 26}
    one_side = face_units(lower_face, mirrored=False)
    other_side = face_units({MIRROR[i]: (-du, dv) for i, (du, dv) in lower_face.items()}, mirrored=False)
    return left * one_side + right * other_side


def _lip_closing(pts: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N_FACE,) px along v that close each inner-lip pair, the outer lips following (the chin stays: closing a
    smile's lips is the lips' work)."""
    dv = np.zeros(N_FACE)
    for upper, lower, outer_upper, outer_lower in LIP_PAIRS:
        gap = max(0.0, float(np.dot(pts[lower] - pts[upper], v)))
        dv[upper] += UPPER_SHARE * gap
        dv[outer_upper] += 0.5 * UPPER_SHARE * gap
        dv[lower] -= (1 - UPPER_SHARE) * gap
        dv[outer_lower] -= 0.85 * (1 - UPPER_SHARE) * gap
    return dv


def neutral_offsets(pts: np.ndarray, n_vertices: int) -> np.ndarray:
    """(n_vertices, 2) float32 px that take the photo's expression out (rows past the face's points stay 0)."""
    u, v, iod = face_frame(pts)
    expression = measure(pts)
    units = -_smile_units(*expression.smile)
    units[:, 0] *= NARROW_SHARE
    offsets = np.zeros((n_vertices, 2), np.float32)
    offsets[:N_FACE] = (np.outer(units[:, 0], u) + np.outer(units[:, 1], v)) * iod
    unsmiled = pts + offsets[:68]  # the lips close from where the smile's removal left them (else they cross)
    offsets[:N_FACE] += np.outer(_lip_closing(unsmiled, v), v)
    return offsets


def closed_lips(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The crop with its open mouth's inside (between the inner lips) filled from the lips' inner edges, the upper
    lip's colour blending into the lower's. The crop itself when the lips are closed."""
    _, v, iod = face_frame(pts)
    if float(np.dot(pts[66] - pts[62], v)) < 1.0:
        return crop
    x0, x1 = int(np.floor(pts[60, 0])) - 1, int(np.ceil(pts[64, 0])) + 2
    xs = np.arange(x0, x1, dtype=np.float32)
    upper = smooth_curve(pts[UPPER_INNER], xs)
    lower = np.maximum(smooth_curve(pts[LOWER_INNER], xs), upper)
    margin = max(1.5, 0.02 * iod)  # the landmarks miss the lips' inner edges by a pixel or two: teeth peek out
    upper, lower = upper - 0.5 * margin, lower + margin
    y0, y1 = int(np.floor(upper.min())) - 1, int(np.ceil(lower.max())) + 2
    top = cv2.remap(crop, xs[None], (upper - margin)[None], cv2.INTER_LINEAR).astype(np.float32)[0]
    bottom = cv2.remap(crop, xs[None], (lower + margin)[None], cv2.INTER_LINEAR).astype(np.float32)[0]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    t = np.clip((ys - upper) / np.maximum(lower - upper, 1.0), 0, 1)[..., None]
    fill = top * (1 - t) + bottom * t  # no dark seam here: the grid-sampled warp would make it jagged (cavity.py
    # draws the line where the lips meet, along their smooth curve)
    cover = (smoothstep(ys - upper + 1.0) * smoothstep(lower - ys + 1.0))[..., None]
    out = crop.copy()
    roi = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(roi * (1 - cover) + fill * cover + 0.5, 0, 255).astype(np.uint8)
    return out
