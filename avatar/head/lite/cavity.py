"""The open mouth of the lite engine: throat, tongue and teeth painted between the inner lips."""
from __future__ import annotations

import cv2
import numpy as np

from .draw import smooth_contour, smoothstep, soft_polygon, sorted_xy
from .topology import INNER_LIP, LOWER_INNER, UPPER_INNER

def mouth_colours(crop: np.ndarray, pts: np.ndarray, gap_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teeth colour from the photo's open mouth when it shows one, else a warm off-white scaled to the face's light;
    throat and tongue colours: the lips darkened."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[48:60]).astype(np.int32)], 1)
    lips = crop[mask > 0].astype(np.float32)
    lip_rgb = np.median(lips, axis=0) if len(lips) else np.array([150, 80, 80], np.float32)
    teeth = np.array([232, 226, 212], np.float32) * min(1.0, float(np.median(crop[..., :3])) / 140.0 + 0.4)
    if gap_px > 2:
        inner = np.zeros_like(mask)
        cv2.fillPoly(inner, [np.round(pts[INNER_LIP]).astype(np.int32)], 1)
        pix = crop[inner > 0].astype(np.float32)
        bright = pix[pix.sum(1) >= np.percentile(pix.sum(1), 70)] if len(pix) > 10 else pix
        if len(bright) and bright.mean() > 120:
            teeth = np.median(bright, axis=0)
    throat = lip_rgb * np.float32([0.22, 0.10, 0.10])
    tongue = lip_rgb * np.float32([0.62, 0.34, 0.34])
    return teeth.astype(np.float32), throat.astype(np.float32), tongue.astype(np.float32)



def draw_cavity(frame: np.ndarray, mesh, target: np.ndarray) -> None:
    """Paints the open mouth between the inner lips, in place, fading in as the gap grows beyond the photo's own:
    a dark throat warming towards the tongue, upper teeth hanging from the upper lip (the photo's own teeth when it
    shows them, else a shaded band) and a hint of lower teeth."""
    gap = float(np.dot(target[66] - target[62], mesh.v))
    strength = float(np.clip((gap - mesh.source_gap_px - 0.01 * mesh.iod_px) / (0.06 * mesh.iod_px), 0, 1))
    if strength <= 0:
        return
    poly = smooth_contour(target[INNER_LIP])
    x0, y0 = np.floor(poly.min(0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 2
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    shape = (y1 - y0, x1 - x0)
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    upper = np.interp(xs, *sorted_xy(target[UPPER_INNER]))
    lower = np.interp(xs, *sorted_xy(target[LOWER_INNER]))
    left, right = target[60, 0], target[64, 0]
    across = smoothstep((1 - np.abs(2 * (xs - (left + right) / 2) / max(right - left, 1.0))) / 0.4)
    depth = np.clip((ys - upper) / np.maximum(lower - upper, 1.0), 0, 1)[..., None]  # 0 at upper lip, 1 at lower
    tongue = smoothstep((depth - 0.55) / 0.45)
    colour = mesh.throat_rgb * (1 - tongue) + mesh.tongue_rgb * tongue
    colour = colour * (0.8 + 0.2 * across[:, None])
    lower_h = min(0.12 * gap, 0.035 * mesh.iod_px)
    lower_teeth = (smoothstep((ys - (lower - lower_h)) / 1.5) * across * 0.35)[..., None]
    colour = colour * (1 - lower_teeth) + mesh.teeth_rgb * 0.75 * lower_teeth
    teeth_rgb, teeth_a = _upper_teeth(mesh, target, (x0, y0), shape, xs, ys, upper, gap, across)
    colour = colour * (1 - teeth_a) + teeth_rgb * teeth_a
    a = (soft_polygon(shape, poly - (x0, y0)) * strength)[..., None]
    roi = frame[y0:y1, x0:x1]
    roi[:] = np.clip(roi.astype(np.float32) * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


def _upper_teeth(mesh, target: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], xs: np.ndarray,
                 ys: np.ndarray, upper: np.ndarray, gap: float,
                 across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour, alpha) of the upper teeth over the ROI: the photo's own mouth interior carried along with the upper
    lip when the photo shows it, else a band shaded from the gum line down."""
    if mesh.source_gap_px > 2:
        shift = target[62] - mesh.source[62]
        centre = (origin[0] + (shape[1] - 1) / 2 - float(shift[0]), origin[1] + (shape[0] - 1) / 2 - float(shift[1]))
        patch = cv2.getRectSubPix(mesh.rgb, (shape[1], shape[0]), centre).astype(np.float32)
        inside = soft_polygon(shape, smooth_contour(mesh.source[INNER_LIP]) + shift - origin)
        return patch, (inside * (0.35 + 0.65 * across[None, :]))[..., None]
    height = min(0.42 * gap, 0.10 * mesh.iod_px)
    down = np.clip((ys - upper) / max(height, 1.0), 0, 1.2)
    band = smoothstep((1.0 - down) / 0.15) * across
    shade = 0.82 + 0.18 * np.sin(np.clip(down, 0, 1) * np.pi)  # gum shadow at the top, edge at the bottom
    tooth_px = max(2.0, 0.13 * mesh.iod_px)  # incisor width; the two front teeth meet at the mouth's centre
    phase = (xs - (target[60, 0] + target[64, 0]) / 2) / tooth_px
    shade = shade * (1 - 0.22 * np.exp(-((phase - np.round(phase)) / 0.09) ** 2))[None, :]
    return mesh.teeth_rgb * shade[..., None], band[..., None]

