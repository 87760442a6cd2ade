"""Small drawing helpers shared by the painted mouth and the eyes."""
from __future__ import annotations

import cv2
import numpy as np


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def smooth_contour(points: np.ndarray, per_segment: int = 4) -> np.ndarray:
    """A closed polygon -> a closed Catmull-Rom curve through its points (the inner lips are 8 points: too angular)."""
    p0, p1, p2, p3 = (np.roll(points, k, axis=0) for k in (1, 0, -1, -2))
    t = (np.arange(per_segment, dtype=np.float32) / per_segment)[None, :, None]
    curve = 0.5 * (2 * p1[:, None] + (p2 - p0)[:, None] * t + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t ** 2
                   + (3 * p1 - p0 - 3 * p2 + p3)[:, None] * t ** 3)
    return curve.reshape(-1, 2)


def soft_polygon(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask.astype(np.float32) / 255.0


def parabola(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """y(x) of the least-squares parabola through an eyelid's 4 points (smoother than the polyline)."""
    centre = points[:, 0].mean()
    coeffs = np.polyfit(points[:, 0] - centre, points[:, 1], 2)
    return np.polyval(coeffs, xs - centre).astype(np.float32)


def sorted_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]



def smooth_curve(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """y(x) at xs of the Catmull-Rom curve through points ordered left to right (a lip line's 5 points), flat
    beyond its ends."""
    ends = np.concatenate([points[:1], points, points[-1:]])
    p0, p1, p2, p3 = ends[:-3], ends[1:-2], ends[2:-1], ends[3:]
    t = np.linspace(0, 1, 8, endpoint=False, dtype=np.float32)[None, :, None]
    curve = 0.5 * (2 * p1[:, None] + (p2 - p0)[:, None] * t + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t ** 2
                   + (3 * p1 - p0 - 3 * p2 + p3)[:, None] * t ** 3)
    curve = np.concatenate([curve.reshape(-1, 2), points[-1:]])
    order = np.argsort(curve[:, 0], kind="stable")
    return np.interp(xs, curve[order, 0], curve[order, 1]).astype(np.float32)
