"""The open mouth of the lite engine, painted between the inner lips of each frame: a throat in shadow, the tongue
resting on the floor of the mouth, lower teeth along the lower lip and upper teeth hanging from the upper lip.

Everything is laid out per column of the mouth between the two inner-lip curves, so it follows the jaw: the lower
teeth and the tongue ride on the lower lip, the upper teeth on the upper lip. The teeth are shorter and darker
towards the corners (the dental arch turns away from the camera), separated by thin shadows (incisors at the centre,
narrower teeth towards the corners) with rounded tips. Colours come from the photo once: its own teeth when it
shows them, else a warm off-white scaled to the face's light; throat and tongue from the lips' colour.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .draw import smooth_curve, smoothstep
from .topology import INNER_LIP, LOWER_INNER, UPPER_INNER

UPPER_TEETH_IOD = 0.085  # the most upper teeth shown (face units); at most UPPER_TEETH_SHARE of the opening
UPPER_TEETH_SHARE = 0.42  # a slightly parted mouth shows its teeth nearly meeting; a wide one the throat between
LOWER_TEETH_IOD = 0.04  # the lower lip hides most of the lower teeth
LOWER_TEETH_SHARE = 0.22
TONGUE_SHARE = 0.45  # the tongue's dome rises this share of the opening above the lower lip
INCISOR_IOD = 0.13  # width of a front tooth (face units)
OPEN_PX = (0.4, 2.0)  # inner-lip gap (px) over which the painted mouth fades in
RIM_IOD = 0.015  # the shaded rim inside the lips (face units)
LIP_LINE_IOD = 0.008  # half-width of the shadow line where closed lips meet (face units)
LIP_LINE_OPACITY = 0.55


@dataclass(frozen=True)
class MouthLook:
    """The colours of a mouth's inside, taken from the photo once."""
    teeth_rgb: np.ndarray  # (3,) float32
    throat_rgb: np.ndarray
    tongue_rgb: np.ndarray


def mouth_look(crop: np.ndarray, pts: np.ndarray) -> MouthLook:
    """Teeth colour from the photo's open mouth when it shows teeth, else a warm off-white scaled to the face's
    light; throat and tongue from the lips' colour."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[48:60]).astype(np.int32)], 1)
    inner = np.zeros_like(mask)
    cv2.fillPoly(inner, [np.round(pts[INNER_LIP]).astype(np.int32)], 1)
    lips = crop[(mask > 0) & (inner == 0)].astype(np.float32)
    lip_rgb = np.median(lips, axis=0) if len(lips) else np.array([150, 80, 80], np.float32)
    light = min(1.0, float(np.median(crop)) / 140.0 + 0.4)
    teeth = np.array([226, 220, 206], np.float32) * light
    shown = crop[inner > 0].astype(np.float32)
    if len(shown) > 10:
        bright = shown[shown.sum(1) >= np.percentile(shown.sum(1), 70)]
        if bright.mean() > 120 and np.ptp(np.median(bright, 0)) < 60:  # light and not reddish: teeth
            teeth = np.median(bright, axis=0)
    throat = lip_rgb * np.float32([0.5, 0.27, 0.26])
    tongue = lip_rgb * np.float32([0.88, 0.58, 0.58])
    return MouthLook(teeth.astype(np.float32), throat.astype(np.float32), tongue.astype(np.float32))


@dataclass(frozen=True)
class MouthLayout:
    """Per column of the mouth's box: the inner lips' y, how central the column is (0 at the corners, 1 at the
    centre), and the rows' y; shared by all the layers."""
    upper: np.ndarray  # (w,)
    lower: np.ndarray  # (w,)
    across: np.ndarray  # (w,)
    phase: np.ndarray  # (w,) tooth index along the arch (integers: the gaps between teeth)
    ys: np.ndarray  # (h, 1)


def _layout(target: np.ndarray, box: tuple[int, int, int, int], iod_px: float) -> MouthLayout:
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, dtype=np.float32)
    upper = smooth_curve(target[UPPER_INNER], xs)
    lower = np.maximum(smooth_curve(target[LOWER_INNER], xs), upper)
    left, right = float(target[60, 0]), float(target[64, 0])
    half = max(0.5 * (right - left), 1.0)
    offset = (xs - 0.5 * (left + right)) / half
    across = np.clip(1.0 - np.abs(offset), 0.0, 1.0)
    # teeth further round the arch are seen narrower: the phase runs faster towards the corners
    phase = offset * half / (INCISOR_IOD * iod_px) * (1.0 + 0.7 * offset ** 2)
    return MouthLayout(upper, lower, across, phase, np.arange(y0, y1, dtype=np.float32)[:, None])


def _tooth_gaps(phase: np.ndarray, depth: float = 0.3) -> np.ndarray:
    """(w,) 1 on a tooth, darker in the thin shadow between two teeth."""
    return 1.0 - depth * np.exp(-(((phase - np.round(phase)) / 0.08) ** 2))


def _throat_and_tongue(look: MouthLook, m: MouthLayout) -> np.ndarray:
    """(h, w, 3): the throat, darker in the corners and up under the upper lip, and the tongue's dome on the floor."""
    opening = m.lower - m.upper
    depth = np.clip((m.ys - m.upper) / np.maximum(opening, 1.0), 0, 1)
    shade = (0.55 + 0.45 * smoothstep(m.across / 0.7)) * (0.75 + 0.25 * depth)
    colour = look.throat_rgb * shade[..., None]
    tongue_top = m.lower - TONGUE_SHARE * opening * np.sqrt(m.across)
    cover = smoothstep((m.ys - tongue_top) / 1.5) * smoothstep(m.across / 0.3)
    front = smoothstep((m.ys - tongue_top) / np.maximum(0.6 * (m.lower - tongue_top), 1.0))
    tongue = look.tongue_rgb * (0.7 + 0.3 * front)[..., None]
    return colour * (1 - cover[..., None]) + tongue * cover[..., None]


def _upper_teeth(look: MouthLook, m: MouthLayout, iod_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(colour (h,w,3), cover (h,w,1)) of the upper teeth hanging from the upper lip."""
    opening = m.lower - m.upper
    length = np.minimum(UPPER_TEETH_SHARE * opening, UPPER_TEETH_IOD * iod_px) * (0.55 + 0.45 * m.across)
    tip = 1.0 - 0.15 * (2 * (m.phase - np.floor(m.phase)) - 1) ** 2  # rounded tips
    bottom = m.upper + length * tip
    cover = smoothstep((bottom - m.ys) / 1.0) * smoothstep(m.across / 0.12)
    gum_shadow = 0.78 + 0.22 * smoothstep((m.ys - m.upper) / np.maximum(0.35 * length, 1.0))
    shade = (0.55 + 0.45 * m.across ** 0.7) * _tooth_gaps(m.phase) * gum_shadow
    return look.teeth_rgb * shade[..., None], cover[..., None]


def _lower_teeth(look: MouthLook, m: MouthLayout, iod_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(colour, cover) of the lower teeth's edges showing above the lower lip (hidden while the mouth is barely
    open: the lower lip covers them)."""
    opening = m.lower - m.upper
    central = smoothstep((m.across - 0.2) / 0.35)  # the lower arch is narrow: only the front teeth show
    length = np.minimum(LOWER_TEETH_SHARE * opening, LOWER_TEETH_IOD * iod_px) * central
    length = length * smoothstep(opening / (0.12 * iod_px))
    cover = smoothstep((m.ys - (m.lower - length)) / 1.0) * (length > 0.3)
    shade = (0.7 + 0.25 * m.across) * _tooth_gaps(m.phase * 1.35, 0.15)  # narrower incisors, in the lip's shadow
    return look.teeth_rgb * shade[..., None], cover[..., None]


def _lip_rims(m: MouthLayout, iod_px: float) -> np.ndarray:
    """(h, w, 1) shading of the opening's top and bottom rows: the lips curl in and shade their inner edges."""
    rim = max(1.0, RIM_IOD * iod_px)
    return (0.75 + 0.25 * smoothstep((m.ys - m.upper) / rim) * smoothstep((m.lower - m.ys) / rim))[..., None]


def _opening_cover(m: MouthLayout) -> np.ndarray:
    """(h, w, 1) anti-aliased coverage of the opening between the inner-lip curves."""
    inside = smoothstep(m.ys - m.upper + 0.5) * smoothstep(m.lower - m.ys + 0.5) * (m.across > 0)
    return inside[..., None]


def _lip_line(look: MouthLook, m: MouthLayout, iod_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(colour, cover) of the thin shadow where closed lips meet, along their smooth curve."""
    half_width = max(0.7, LIP_LINE_IOD * iod_px)
    middle = 0.5 * (m.upper + m.lower)
    cover = np.exp(-(((m.ys - middle) / half_width) ** 2)) * smoothstep(m.across / 0.3) * LIP_LINE_OPACITY
    return np.broadcast_to(look.throat_rgb * 1.5, (*cover.shape, 3)), cover[..., None]


def draw_mouth(frame: np.ndarray, look: MouthLook, target: np.ndarray, v: np.ndarray, iod_px: float) -> None:
    """Paints the mouth between the inner lips of `target`, in place: the line where the lips meet while they are
    closed, the inside fading in as they part."""
    gap = float(np.dot(target[66] - target[62], v))
    strength = float(np.clip((gap - OPEN_PX[0]) / (OPEN_PX[1] - OPEN_PX[0]), 0, 1))
    lips = target[INNER_LIP]
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(lips.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(lips.max(0)).astype(int) + 3, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    m = _layout(target, (x0, y0, x1, y1), iod_px)
    roi = frame[y0:y1, x0:x1]
    out = roi.astype(np.float32)
    if strength < 1:
        line, cover = _lip_line(look, m, iod_px)
        out = out * (1 - cover * (1 - strength)) + line * cover * (1 - strength)
    if strength > 0:
        colour = _throat_and_tongue(look, m)
        for layer, cover in (_lower_teeth(look, m, iod_px), _upper_teeth(look, m, iod_px)):
            colour = colour * (1 - cover) + layer * cover
        colour = colour * _lip_rims(m, iod_px)
        alpha = _opening_cover(m) * strength
        out = out * (1 - alpha) + colour * alpha
    roi[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
