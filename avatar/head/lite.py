"""The "lite" talking head: a piecewise-affine warp of the aligned photo, driven by landmark offsets. CPU only, no
weights. From one photo and any speech it animates the mouth (speech energy and spectral shape), the chosen emotion
(landmark offsets on brows, eyelids, cheeks and mouth), blinks and head motion (a pose sequence).

How a frame is made (all per-photo data is computed once in `prepare`):
- the mesh: the 68 landmarks + cheek and forehead points + a ring around the head + fixed points on the frame border,
  Delaunay-triangulated once (on a copy with the mouth held open, so the inner-mouth triangles join only inner lips);
- per frame the vertices move (expression offsets in face units, then the head's pose, weighted per vertex: the
  border never moves, so the background stays put); each triangle gives a target->source affine;
- the triangle index of every point of a coarse grid (MAP_GRID_N points per side) is rasterised with
  cv2.fillConvexPoly, the grid map is evaluated from the per-triangle affines, upsampled bilinearly (the map is
  continuous, so this is nearly exact) and applied to the RGBA source with one cv2.remap; the A channel carries a
  matte of the photo, so matting follows the warp for free;
- a mouth cavity (dark throat, a hint of upper and lower teeth) is painted between the inner lips as the mouth opens
  beyond the photo's own opening.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from avatar.core.config import AvatarConfig, LimitsConfig
from avatar.core.types import FPS, Audio, PoseSequence, check_emotion, check_rgb

from .base import PreparedFace, n_frames
from .face import prepare_face
from .poses import ping_pong_indices

MAP_GRID_N = 128  # warp-map grid points per side (upsampled bilinearly: 2 px steps at 256, 4 px at 512)
MAX_OPEN_IOD = 0.26  # jaw drop at full speech energy, in inter-ocular distances
EMOTION_GAIN = 1.3  # all emotion offsets at intensity 1 (the tables below are at gain 1)
N_RING = 20  # vertices on the ring around the head
N_BORDER_PER_SIDE = 5  # fixed vertices per frame edge (corners included)

# ---------------------------------------------------------------- landmark topology (iBUG 68, 0-based)
_PAIRS = [(i, 16 - i) for i in range(8)] + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
          (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59),
          (56, 58), (60, 64), (61, 63), (65, 67), (68, 69), (70, 71), (72, 76), (73, 75)]
N_FACE = 77  # 68 landmarks + cheeks 68..71 + forehead 72..76
MIRROR = np.arange(N_FACE)
for _a, _b in _PAIRS:
    MIRROR[_a], MIRROR[_b] = _b, _a
INNER_LIP = [60, 61, 62, 63, 64, 65, 66, 67]
UPPER_INNER = [60, 61, 62, 63, 64]
LOWER_INNER = [60, 67, 66, 65, 64]
FOREHEAD_FROM_BROW = {72: [17], 73: [19], 74: [21, 22], 75: [24], 76: [26]}

# Emotion offsets in face units (inter-ocular distances): (du, dv), u = towards the image-right eye, v = down.
# Given for image-left / centre points; mirrored (du negated) onto the other side unless the spec is asymmetric.
_EMOTIONS: dict[str, dict[int, tuple[float, float]]] = {
    "neutral": {},
    "happy": {48: (-0.06, -0.10), 60: (-0.05, -0.08), 49: (-0.02, -0.05), 59: (-0.02, -0.03), 50: (0, -0.02),
              61: (-0.01, -0.03), 67: (-0.01, -0.02), 68: (-0.01, -0.05), 70: (-0.03, -0.06), 40: (0, -0.025),
              41: (0, -0.025), 36: (0, -0.01), 17: (0, -0.02), 19: (0, -0.02), 21: (0, -0.015)},
    "sad": {48: (0.02, 0.08), 60: (0.02, 0.06), 49: (0, 0.03), 59: (0, 0.04), 57: (0, -0.02), 56: (0, -0.015),
            21: (0.015, -0.11), 20: (0, -0.07), 19: (0, -0.025), 17: (0, 0.035), 18: (0, 0.02),
            37: (0, 0.03), 38: (0, 0.03), 8: (0, -0.01)},
    "surprised": {17: (0, -0.10), 18: (0, -0.13), 19: (0, -0.14), 20: (0, -0.13), 21: (0, -0.11),
                  37: (0, -0.045), 38: (0, -0.045), 36: (0, -0.01), 39: (0, -0.01), 40: (0, 0.015), 41: (0, 0.015)},
    "angry": {21: (0.09, 0.09), 20: (0.06, 0.08), 19: (0.025, 0.055), 74: (0, 0.02), 18: (0, 0.03),
              37: (0, 0.015), 38: (0, 0.02),
              40: (0, -0.02), 41: (0, -0.02), 48: (0.03, 0.01), 60: (0.03, 0.0), 50: (0, 0.015), 51: (0, 0.015),
              57: (0, -0.025), 56: (0, -0.02), 31: (0, -0.015)},
    "fear": {21: (0.035, -0.09), 20: (0.02, -0.08), 19: (0, -0.06), 18: (0, -0.04), 17: (0, -0.02),
             37: (0, -0.04), 38: (0, -0.04), 48: (-0.06, 0.035), 60: (-0.05, 0.025), 59: (-0.02, 0.02),
             49: (-0.02, 0.01), 57: (0, 0.02)},
    "disgusted": {50: (0, -0.06), 51: (0, -0.07), 49: (0, -0.04), 61: (0, -0.05), 62: (0, -0.05),
                  31: (0, -0.04), 32: (0, -0.03), 33: (0, -0.025), 48: (0.01, 0.03), 21: (0.03, 0.06),
                  20: (0.02, 0.05), 19: (0, 0.03), 40: (0, -0.03), 41: (0, -0.03), 68: (0, -0.03), 57: (0, 0.015)},
}
# contempt is one-sided: the image-right mouth corner rises and pulls back, the other corner sinks a little, the
# smirking side's lower lid rises (its squint). The earlier, weaker offsets (no sinking corner) left contempt
# 0.93 px from neutral against the tests' 0.80 px limit: within the landmark tracker's noise of it.
_CONTEMPT = {54: (0.08, -0.13), 64: (0.07, -0.11), 53: (0.04, -0.08), 55: (0.04, -0.07), 63: (0.02, -0.065),
             65: (0.015, -0.045), 71: (0.06, -0.1), 57: (0.01, -0.02), 48: (-0.02, 0.1), 60: (-0.01, 0.06),
             59: (0, 0.05), 49: (0, 0.03), 37: (0, 0.03), 38: (0, 0.03), 43: (0, 0.03), 44: (0, 0.03),
             46: (0, -0.025), 47: (0, -0.02), 17: (0, 0.015), 26: (0, 0.015), 22: (0, 0.01), 21: (0, 0.01)}

# how each emotion colours speech: (opening scale, opening bias, mouth width bias)
_MOUTH_STYLE = {"neutral": (1.0, 0.0, 0.0), "happy": (1.0, 0.0, 0.5), "sad": (0.8, 0.0, -0.2),
                "surprised": (1.0, 0.35, -0.6), "angry": (0.9, 0.0, -0.2), "fear": (1.0, 0.15, 0.6),
                "disgusted": (0.9, 0.0, 0.2), "contempt": (0.9, 0.0, 0.0)}

# depth in front of the face's mean plane (face units): yaw/pitch shift near points more than far ones
_DEPTH = {27: 0.15, 28: 0.25, 29: 0.35, 30: 0.5, 31: 0.3, 32: 0.35, 33: 0.4, 34: 0.35, 35: 0.3,
          **{i: 0.05 for i in range(17, 27)}, **{i: 0.15 for i in range(48, 68)}, 48: 0.05, 54: 0.05,
          0: -0.35, 1: -0.3, 2: -0.25, 3: -0.2, 4: -0.1, 5: 0.0, 6: 0.05, 7: 0.1, 8: 0.1,
          16: -0.35, 15: -0.3, 14: -0.25, 13: -0.2, 12: -0.1, 11: 0.0, 10: 0.05, 9: 0.1, 70: 0.05, 71: 0.05}

# jaw drop per unit opening (fraction of the full drop, along v)
_OPEN_DV = {66: 1.0, 65: 0.85, 67: 0.85, 57: 0.95, 56: 0.85, 58: 0.85, 55: 0.5, 59: 0.5, 48: 0.3, 54: 0.3,
            60: 0.3, 64: 0.3, 61: -0.08, 62: -0.08, 63: -0.08, 49: -0.04, 50: -0.05, 51: -0.05, 52: -0.05,
            53: -0.04, 8: 0.85, 7: 0.75, 9: 0.75, 6: 0.55, 10: 0.55, 5: 0.35, 11: 0.35, 4: 0.18, 12: 0.18,
            3: 0.05, 13: 0.05, 70: 0.3, 71: 0.3}
_WIDTH_DU = {48: -0.05, 60: -0.05, 54: 0.05, 64: 0.05, 49: -0.025, 59: -0.025, 53: 0.025, 55: 0.025,
             61: -0.015, 67: -0.015, 63: 0.015, 65: 0.015}
_BLINK = [(37, 41), (38, 40), (43, 47), (44, 46)]  # (upper lid, lower lid)
BLINK_MESH_SHARE = 0.3  # part of a blink done by moving the lid vertices; the rest is a painted lid
# per eye: upper lid, lower lid (corner to corner), brow
_EYES = [([36, 37, 38, 39], [36, 41, 40, 39], [17, 18, 19, 20, 21]),
         ([42, 43, 44, 45], [42, 47, 46, 45], [22, 23, 24, 25, 26])]


# ---------------------------------------------------------------- speech -> mouth
@dataclass(frozen=True)
class MouthTrack:
    opening: np.ndarray  # (n,) 0..1: jaw drop as a fraction of MAX_OPEN_IOD
    width: np.ndarray  # (n,) -1..1: rounded (-) .. spread (+) lips


def _frame_energy(samples: np.ndarray, hop: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 1/25 s frame: mean square and the share of energy above ~2.5 kHz (via a first difference), in blocks."""
    ms, hi = np.zeros(n), np.zeros(n)
    block = 2048  # frames per block: bounds the temporaries for long audio
    for start in range(0, n, block):
        stop = min(n, start + block)
        seg = samples[start * hop: stop * hop].astype(np.float64)
        seg = np.pad(seg, (0, (stop - start) * hop - len(seg)))
        frames = seg.reshape(stop - start, hop)
        ms[start:stop] = np.mean(frames ** 2, axis=1)
        diff = np.diff(frames, axis=1, prepend=frames[:, :1])
        hi[start:stop] = np.mean(diff ** 2, axis=1) / np.maximum(4 * ms[start:stop], 1e-12)
    return ms, hi


def _attack_release(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    y, cur = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        cur += (attack if v > cur else release) * (v - cur)
        y[i] = cur
    return y


def mouth_track(speech: Audio, n: int) -> MouthTrack:
    """Speech -> per-frame mouth opening and width at 25 fps: RMS in dB relative to the clip's loud frames (closed
    below a gate), smoothed with a fast attack and a slower release; width from the high-frequency share."""
    sr = speech.sample_rate
    if sr % FPS:
        from avatar.core.media import resample

        speech, sr = resample(speech, 16000), 16000
    ms, hi = _frame_energy(speech.samples, sr // FPS, n)
    # 3-frame window (80 ms) centred on each frame
    ms = np.convolve(np.pad(ms, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    db = 10 * np.log10(np.maximum(ms, 1e-12))
    loud = np.percentile(db, 95) if n else 0.0
    floor = max(loud - 32.0, -55.0)
    target = np.clip((db - floor) / max(loud - floor, 1e-6), 0, 1) ** 1.3
    target[db < max(floor + 4.0, -50.0)] = 0.0  # silence gate: the mouth closes
    opening = _attack_release(target, attack=0.75, release=0.45)
    voiced = target > 0.05
    z = np.log(np.maximum(hi, 1e-6))
    centre = np.median(z[voiced]) if voiced.any() else 0.0
    width = np.clip(np.tanh((z - centre) * 0.8), -1, 1) * (opening > 0.02)
    return MouthTrack(opening.astype(np.float32), _attack_release(width, 0.5, 0.3).astype(np.float32))


def blink_track(n: int, seed: int, start_frame: int = 0) -> np.ndarray:
    """(n,) eyelid closure 0..1: a blink (~200 ms) every 2-6 s, seeded; frames start_frame.. of that schedule (a
    reply's later sentences continue it instead of blinking at the same offset in every clip)."""
    rng = np.random.default_rng(seed)
    start = max(0, int(start_frame))
    n, closure = start + n, np.zeros(start + n, np.float32)
    profile = np.array([0.35, 0.85, 1.0, 0.75, 0.35, 0.1], np.float32)
    t = int(rng.uniform(1.0, 3.0) * FPS)
    while t < n:
        span = closure[t: t + len(profile)]
        span[:] = np.maximum(span, profile[: len(span)])
        t += int(rng.uniform(2.0, 6.0) * FPS)
    return closure[start:]


# ---------------------------------------------------------------- the per-photo mesh
@dataclass
class Mesh:
    source: np.ndarray  # (V,2) float32 vertices in crop pixels
    triangles: np.ndarray  # (T,3) int32
    head_weight: np.ndarray  # (V,) how much of the head's pose each vertex follows (border 0)
    depth: np.ndarray  # (V,) face units in front of the face plane
    pivot: np.ndarray  # (2,) head rotation/scale centre
    u: np.ndarray  # (2,) face x axis (towards the image-right eye)
    v: np.ndarray  # (2,) face y axis (down)
    iod_px: float  # inter-ocular distance
    open_basis: np.ndarray  # (V,2) px per unit opening
    width_basis: np.ndarray  # (V,2) px per unit width
    source_gap_px: float  # the photo's own inner-lip gap
    rgb: np.ndarray  # (S,S,3) uint8: the crop
    alpha: np.ndarray | None  # (S,S) float32 matte of the crop, warped along when given
    grid: np.ndarray  # (G,G,2) float32 output-pixel coordinates of the map grid
    teeth_rgb: np.ndarray  # (3,) float32
    throat_rgb: np.ndarray  # (3,) float32
    tongue_rgb: np.ndarray  # (3,) float32
    lid_rgb: np.ndarray  # (2,3) float32: upper-lid skin of each eye


def _face_frame(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
    axis = right_eye - left_eye
    iod = float(np.linalg.norm(axis))
    u = axis / max(iod, 1e-6)
    return u.astype(np.float32), np.array([-u[1], u[0]], np.float32), max(iod, 1.0)


def _extra_points(pts: np.ndarray, v: np.ndarray, iod: float) -> np.ndarray:
    cheeks = [(pts[2] + pts[31]) / 2, (pts[14] + pts[35]) / 2, (pts[4] + pts[48]) / 2, (pts[12] + pts[54]) / 2]
    brows = [pts[17], pts[19], (pts[21] + pts[22]) / 2, pts[24], pts[26]]
    lift = [0.5, 0.6, 0.6, 0.6, 0.5]
    forehead = [b - k * iod * v for b, k in zip(brows, lift)]
    return np.array(cheeks + forehead, np.float32)


def _ring(pts: np.ndarray, u: np.ndarray, v: np.ndarray, iod: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """N_RING points around the head (hair, ears, neck) and their head weights (1 above the eyes, 0.4 at the neck)."""
    centre = pts[36:48].mean(0)
    half_w = 0.65 * float(np.linalg.norm(pts[16] - pts[0]))
    top = float(np.dot(centre - pts[[19, 24]].mean(0), v)) + 1.0 * iod
    bottom = float(np.dot(pts[8] - centre, v)) + 0.35 * iod
    angles = np.linspace(0, 2 * np.pi, N_RING, endpoint=False)
    c, s = np.cos(angles), np.sin(angles)
    radius_v = np.where(s < 0, top, bottom)
    ring = centre + np.outer(half_w * c, u) + np.outer(radius_v * s, v)
    margin = 0.05 * size
    ring = np.clip(ring, margin, size - 1 - margin)
    weight = np.where(s < 0, 1.0, 1.0 - 0.6 * s)
    return ring.astype(np.float32), weight.astype(np.float32)


def _border(size: int) -> np.ndarray:
    t = np.linspace(0, size - 1, N_BORDER_PER_SIDE)
    edge = size - 1.0
    pts = [(x, 0.0) for x in t] + [(x, edge) for x in t] + [(0.0, y) for y in t[1:-1]] + [(edge, y) for y in t[1:-1]]
    return np.array(pts, np.float32)


def _basis(spec: dict[int, float], direction: np.ndarray, scale_px: float, n_vertices: int) -> np.ndarray:
    basis = np.zeros((n_vertices, 2), np.float32)
    for index, amount in spec.items():
        basis[index] = amount * scale_px * direction
    return basis


def _triangulate(vertices: np.ndarray, v: np.ndarray, iod: float) -> np.ndarray:
    """Delaunay on a copy with the mouth open and the eyes wide, so no triangle bridges the lips or the lids."""
    from scipy.spatial import Delaunay

    opened = vertices.copy()
    opened[[65, 66, 67, 55, 56, 57, 58, 59]] += 0.25 * iod * v
    opened[[37, 38, 43, 44]] -= 0.05 * iod * v
    return Delaunay(opened.astype(np.float64)).simplices.astype(np.int32)


def _mouth_colours(crop: np.ndarray, pts: np.ndarray, gap_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _lid_colours(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Per eye: the median colour of the skin between the upper lid and the brow (what a closing lid looks like)."""
    colours = []
    for upper, _, brow in _EYES:
        lid = np.array([np.interp(np.linspace(0, 3, 12), range(4), pts[upper][:, k]) for k in (0, 1)]).T
        above = np.array([np.interp(np.linspace(0, 4, 12), range(5), pts[brow][:, k]) for k in (0, 1)]).T
        spots = np.concatenate([lid + k * (above - lid) for k in (0.4, 0.5, 0.6)])
        spots = np.clip(np.round(spots).astype(int), 0, crop.shape[0] - 1)
        colours.append(np.percentile(crop[spots[:, 1], spots[:, 0]].astype(np.float32), 70, axis=0))
    return np.array(colours, np.float32)


def draw_lids(frame: np.ndarray, mesh: Mesh, target: np.ndarray, closure: float) -> None:
    """Paints closing upper lids over the eyes, in place: lid skin from the upper lid down to the lid edge at
    `closure` (0..1) of the way to the lower lid, shaded towards a dark lash line."""
    if closure <= 0.02:
        return
    h, w = frame.shape[:2]
    lash_px = max(1.0, 0.025 * mesh.iod_px)
    for (upper_idx, lower_idx, _), lid_rgb in zip(_EYES, mesh.lid_rgb):
        upper_pts, lower_pts = target[upper_idx], target[lower_idx]
        x0, x1 = int(np.floor(upper_pts[:, 0].min())), int(np.ceil(upper_pts[:, 0].max())) + 1
        y0 = int(np.floor(min(upper_pts[:, 1].min(), lower_pts[:, 1].min()))) - 2
        y1 = int(np.ceil(max(upper_pts[:, 1].max(), lower_pts[:, 1].max()))) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        top, bottom = _parabola(upper_pts, xs), _parabola(lower_pts, xs)
        edge = top + closure * np.maximum(bottom - top, 0)
        inside_x = ((xs >= upper_pts[:, 0].min()) & (xs <= upper_pts[:, 0].max())).astype(np.float32)
        cover = _smoothstep((edge - ys) + 0.5) * _smoothstep(ys - (top - lash_px) + 0.5) * inside_x
        towards_edge = np.clip((ys - top) / np.maximum(edge - top, 1.0), 0, 1)
        colour = lid_rgb * (1.0 - 0.18 * towards_edge[..., None])
        lash = np.exp(-(((ys - edge) / lash_px) ** 2)) * inside_x * min(1.0, closure * 1.5)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        roi = roi * (1 - cover[..., None]) + colour * cover[..., None]
        roi = roi * (1 - 0.6 * lash[..., None]) + lid_rgb * 0.3 * 0.6 * lash[..., None]
        frame[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def build_mesh(face: PreparedFace, alpha: np.ndarray | None = None) -> Mesh:
    crop, pts68 = face.crop, face.landmarks.astype(np.float32)
    size = crop.shape[0]
    u, v, iod = _face_frame(pts68)
    ring, ring_w = _ring(pts68, u, v, iod, size)
    border = _border(size)
    vertices = np.concatenate([pts68, _extra_points(pts68, v, iod), ring, border]).astype(np.float32)
    n_v = len(vertices)
    weight = np.concatenate([np.ones(N_FACE), ring_w, np.zeros(len(border))]).astype(np.float32)
    depth = np.zeros(n_v, np.float32)
    for index, d in _DEPTH.items():
        depth[index] = d
    depth[N_FACE: N_FACE + N_RING] = -0.3
    grid_n = min(size, MAP_GRID_N)
    g = (np.arange(grid_n, dtype=np.float32) + 0.5) * (size / grid_n) - 0.5
    gap = float(np.dot(pts68[66] - pts68[62], v))
    teeth, throat, tongue = _mouth_colours(crop, pts68, gap)
    return Mesh(vertices, _triangulate(vertices, v, iod), weight, depth, pts68.mean(0), u, v, iod,
                _basis(_OPEN_DV, v, MAX_OPEN_IOD * iod, n_v), _basis(_WIDTH_DU, u, iod, n_v), gap,
                np.ascontiguousarray(crop), None if alpha is None else alpha.astype(np.float32),
                np.stack(np.meshgrid(g, g), axis=-1), teeth, throat, tongue,
                _lid_colours(crop, pts68))


def emotion_offsets(mesh: Mesh, emotion: str, intensity: float) -> np.ndarray:
    """(V,2) px offsets of the emotion at intensity 0..1 (neutral = the photo's own expression = zeros)."""
    spec = _CONTEMPT if emotion == "contempt" else _EMOTIONS[emotion]
    face_units = np.zeros((N_FACE, 2), np.float32)
    for index, (du, dv) in spec.items():
        face_units[index] += (du, dv)
        if emotion != "contempt" and MIRROR[index] != index:
            face_units[MIRROR[index]] += (-du, dv)
    for fore, brows in FOREHEAD_FROM_BROW.items():
        face_units[fore] += 0.4 * face_units[brows].mean(0)
    offsets = np.zeros_like(mesh.source)
    offsets[:N_FACE] = (np.outer(face_units[:, 0], mesh.u) + np.outer(face_units[:, 1], mesh.v)) * mesh.iod_px
    return offsets * (EMOTION_GAIN * float(np.clip(intensity, 0.0, 1.0)))


# ---------------------------------------------------------------- per-frame geometry
def posed_vertices(mesh: Mesh, expressed: np.ndarray, pose_row: np.ndarray) -> np.ndarray:
    """Expression-moved vertices -> head-posed vertices. pose_row: yaw, pitch, roll (deg), tx, ty, tz (t units)."""
    yaw, pitch, roll, tx, ty, tz = (float(x) for x in pose_row)
    size = mesh.rgb.shape[0]
    shift = (math.sin(math.radians(yaw)) * np.outer(mesh.depth, mesh.u)
             - math.sin(math.radians(pitch)) * np.outer(mesh.depth, mesh.v)) * mesh.iod_px
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    rot = np.array([[c, -s], [s, c]], np.float32) * (1.0 + tz)
    moved = (expressed + shift - mesh.pivot) @ rot.T + mesh.pivot + np.array([tx, ty], np.float32) * (size / 2)
    return expressed + mesh.head_weight[:, None] * (moved - expressed)


def _target_to_source(target: np.ndarray, source: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-triangle (T,6) coefficients [a,b,c,d,e,f]: src_x = a x + b y + c, src_y = d x + e y + f; and which
    triangles have area (degenerate ones are not rasterised). Closed form: M = [q1-q0, q2-q0] [p1-p0, p2-p0]^-1."""
    p, q = target[tris].astype(np.float64), source[tris].astype(np.float64)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-3
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # inverse of the 2x2 matrix with columns e1, e2
    inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1) * inv_det[:, None, None]
    f1, f2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    m = np.stack([f1, f2], axis=2) @ inv  # (T,2,2): source edges = m @ target edges
    offset = q[:, 0] - np.einsum("tij,tj->ti", m, p[:, 0])
    coef = np.concatenate([m[:, 0], offset[:, :1], m[:, 1], offset[:, 1:]], axis=1)
    return coef.astype(np.float32), ok


def warp_map(mesh: Mesh, target: np.ndarray) -> np.ndarray:
    """(S,S,2) float32 remap map: for each output pixel, where to sample the source crop."""
    size = mesh.rgb.shape[0]
    grid_n = mesh.grid.shape[0]
    coef, ok = _target_to_source(target, mesh.source, mesh.triangles)
    identity = np.array([[1, 0, 0, 0, 1, 0]], np.float32)
    coef = np.concatenate([coef, identity])
    index = np.full((grid_n, grid_n), len(mesh.triangles), np.int16)
    scale = grid_n / size
    corners = np.round((target * scale - 0.5 * (1 - scale)) * 16).astype(np.int32)  # 4 fractional bits
    for k in np.flatnonzero(ok):
        cv2.fillConvexPoly(index, corners[mesh.triangles[k]], int(k), cv2.LINE_8, 4)
    c = coef[index]  # (G,G,6)
    gx, gy = mesh.grid[..., 0], mesh.grid[..., 1]
    grid_map = np.stack([c[..., 0] * gx + c[..., 1] * gy + c[..., 2], c[..., 3] * gx + c[..., 4] * gy + c[..., 5]], -1)
    return cv2.resize(grid_map, (size, size), interpolation=cv2.INTER_LINEAR)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def smooth_contour(points: np.ndarray, per_segment: int = 4) -> np.ndarray:
    """A closed polygon -> a closed Catmull-Rom curve through its points (the inner lips are 8 points: too angular)."""
    p0, p1, p2, p3 = (np.roll(points, k, axis=0) for k in (1, 0, -1, -2))
    t = (np.arange(per_segment, dtype=np.float32) / per_segment)[None, :, None]
    curve = 0.5 * (2 * p1[:, None] + (p2 - p0)[:, None] * t + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t ** 2
                   + (3 * p1 - p0 - 3 * p2 + p3)[:, None] * t ** 3)
    return curve.reshape(-1, 2)


def _soft_polygon(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask.astype(np.float32) / 255.0


def draw_cavity(frame: np.ndarray, mesh: Mesh, target: np.ndarray) -> None:
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
    upper = np.interp(xs, *_sorted_xy(target[UPPER_INNER]))
    lower = np.interp(xs, *_sorted_xy(target[LOWER_INNER]))
    left, right = target[60, 0], target[64, 0]
    across = _smoothstep((1 - np.abs(2 * (xs - (left + right) / 2) / max(right - left, 1.0))) / 0.4)
    depth = np.clip((ys - upper) / np.maximum(lower - upper, 1.0), 0, 1)[..., None]  # 0 at upper lip, 1 at lower
    tongue = _smoothstep((depth - 0.55) / 0.45)
    colour = mesh.throat_rgb * (1 - tongue) + mesh.tongue_rgb * tongue
    colour = colour * (0.8 + 0.2 * across[:, None])
    lower_h = min(0.12 * gap, 0.035 * mesh.iod_px)
    lower_teeth = (_smoothstep((ys - (lower - lower_h)) / 1.5) * across * 0.35)[..., None]
    colour = colour * (1 - lower_teeth) + mesh.teeth_rgb * 0.75 * lower_teeth
    teeth_rgb, teeth_a = _upper_teeth(mesh, target, (x0, y0), shape, xs, ys, upper, gap, across)
    colour = colour * (1 - teeth_a) + teeth_rgb * teeth_a
    a = (_soft_polygon(shape, poly - (x0, y0)) * strength)[..., None]
    roi = frame[y0:y1, x0:x1]
    roi[:] = np.clip(roi.astype(np.float32) * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


def _upper_teeth(mesh: Mesh, target: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], xs: np.ndarray,
                 ys: np.ndarray, upper: np.ndarray, gap: float,
                 across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour, alpha) of the upper teeth over the ROI: the photo's own mouth interior carried along with the upper
    lip when the photo shows it, else a band shaded from the gum line down."""
    if mesh.source_gap_px > 2:
        shift = target[62] - mesh.source[62]
        centre = (origin[0] + (shape[1] - 1) / 2 - float(shift[0]), origin[1] + (shape[0] - 1) / 2 - float(shift[1]))
        patch = cv2.getRectSubPix(mesh.rgb, (shape[1], shape[0]), centre).astype(np.float32)
        inside = _soft_polygon(shape, smooth_contour(mesh.source[INNER_LIP]) + shift - origin)
        return patch, (inside * (0.35 + 0.65 * across[None, :]))[..., None]
    height = min(0.42 * gap, 0.10 * mesh.iod_px)
    down = np.clip((ys - upper) / max(height, 1.0), 0, 1.2)
    band = _smoothstep((1.0 - down) / 0.15) * across
    shade = 0.82 + 0.18 * np.sin(np.clip(down, 0, 1) * np.pi)  # gum shadow at the top, edge at the bottom
    tooth_px = max(2.0, 0.13 * mesh.iod_px)  # incisor width; the two front teeth meet at the mouth's centre
    phase = (xs - (target[60, 0] + target[64, 0]) / 2) / tooth_px
    shade = shade * (1 - 0.22 * np.exp(-((phase - np.round(phase)) / 0.09) ** 2))[None, :]
    return mesh.teeth_rgb * shade[..., None], band[..., None]


def _parabola(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """y(x) of the least-squares parabola through an eyelid's 4 points (smoother than the polyline)."""
    centre = points[:, 0].mean()
    coeffs = np.polyfit(points[:, 0] - centre, points[:, 1], 2)
    return np.polyval(coeffs, xs - centre).astype(np.float32)


def _sorted_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


# ---------------------------------------------------------------- the engine
@dataclass(frozen=True)
class ClipPlan:
    """Everything per clip that is not per pixel: small arrays of n entries (constant memory for long audio)."""
    mouth: MouthTrack
    blinks: np.ndarray
    emotion_px: np.ndarray
    open_scale: float
    open_bias: float
    width_bias: float
    pose: np.ndarray  # (n,6)


class LiteEngine:
    """TalkingHead "lite": `LiteEngine.load(cfg)`, `prepare(photo)`, then `frames(...)` or `frames_with_alpha(...)`."""

    name = "lite"
    device = "cpu"

    def __init__(self, size: int = 256, batch_size: int = 16, seed: int = 0, limits: LimitsConfig | None = None,
                 template68: np.ndarray | None = None) -> None:
        if size not in (256, 512):
            raise ValueError(f"lite engine size must be 256 or 512, got {size}")
        self.size, self.batch_size, self.seed = size, max(1, batch_size), seed
        self.limits = limits or LimitsConfig()
        self.template68 = template68
        self.fallback_reason: str | None = None  # set by avatar.head.load_head when EAT was wanted

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "LiteEngine":
        return cls(size=cfg.head.size, batch_size=cfg.head.batch_size, seed=cfg.head.seed, limits=cfg.limits)

    def prepare(self, photo: np.ndarray) -> PreparedFace:
        face = prepare_face(photo, self.size, self.limits, self.template68)
        face.cache["lite_mesh"] = build_mesh(face)
        return face

    def mesh(self, face: PreparedFace, alpha: np.ndarray | None = None) -> Mesh:
        """The face's mesh (built once, cached); with a matte of face.crop (float (S,S) 0..1) in its A channel."""
        mesh = face.cache.get("lite_mesh") or build_mesh(face)
        face.cache["lite_mesh"] = mesh
        if alpha is None:
            return mesh
        assert alpha.shape == mesh.rgb.shape[:2], "the matte must have the crop's size"
        return Mesh(**{**mesh.__dict__, "alpha": np.ascontiguousarray(alpha, dtype=np.float32)})

    def plan(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence, intensity: float) -> ClipPlan:
        emotion = check_emotion(emotion)
        n = n_frames(speech.duration_s)
        rows = np.concatenate([pose.angles_deg, pose.translation], axis=1)[ping_pong_indices(len(pose), n)]
        scale, bias, width = _MOUTH_STYLE[emotion]
        k = float(np.clip(intensity, 0, 1))
        return ClipPlan(mouth_track(speech, n), blink_track(n, self.seed, pose.start_frame),
                        emotion_offsets(self.mesh(face), emotion, k),
                        1 + (scale - 1) * k, bias * k, width * k, rows.astype(np.float32))

    def vertices(self, mesh: Mesh, plan: ClipPlan, i: int) -> np.ndarray:
        """The mesh vertices of frame i: expression (emotion + speech + blink), then the head's pose."""
        opening = plan.open_bias + plan.open_scale * float(plan.mouth.opening[i]) * (1 - 0.5 * plan.open_bias)
        width = float(np.clip(plan.width_bias + 0.6 * plan.mouth.width[i], -1, 1))
        pts = mesh.source + plan.emotion_px + opening * mesh.open_basis + width * mesh.width_basis
        blink = float(plan.blinks[i])
        if blink > 0:
            for upper, lower in _BLINK:
                pts[upper] += BLINK_MESH_SHARE * blink * (pts[lower] - pts[upper])
        return posed_vertices(mesh, pts, plan.pose[i])

    def render_frame(self, mesh: Mesh, target: np.ndarray, out_rgb: np.ndarray,
                     out_alpha: np.ndarray | None = None, blink: float = 0.0) -> None:
        """One frame into out_rgb (S,S,3) uint8 (and the warped matte into out_alpha (S,S) float32)."""
        pixel_map = warp_map(mesh, target)
        cv2.remap(mesh.rgb, pixel_map, None, cv2.INTER_LINEAR, dst=out_rgb, borderMode=cv2.BORDER_REFLECT_101)
        if out_alpha is not None and mesh.alpha is not None:
            cv2.remap(mesh.alpha, pixel_map, None, cv2.INTER_LINEAR, dst=out_alpha, borderMode=cv2.BORDER_REPLICATE)
        draw_cavity(out_rgb, mesh, target)
        draw_lids(out_rgb, mesh, target, blink)

    def _batches(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence, intensity: float,
                 alpha: np.ndarray | None, mesh: Mesh | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        check_rgb(face.crop)
        mesh = mesh or self.mesh(face, alpha)
        plan = self.plan(face, speech, emotion, pose, intensity)
        n, size = len(plan.blinks), face.crop.shape[0]
        for start in range(0, n, self.batch_size):
            count = min(self.batch_size, n - start)
            rgb = np.empty((count, size, size, 3), np.uint8)
            mattes = None if alpha is None else np.empty((count, size, size), np.float32)
            for j in range(count):
                target = self.vertices(mesh, plan, start + j)
                self.render_frame(mesh, target, rgb[j], None if mattes is None else mattes[j],
                                  float(plan.blinks[start + j]))
            yield rgb, mattes

    def frames(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
               intensity: float = 1.0) -> Iterator[np.ndarray]:
        """Yields uint8 (B,S,S,3) RGB batches; n_frames(speech.duration_s) frames in all."""
        for rgb, _ in self._batches(face, speech, emotion, pose, intensity, None):
            yield rgb

    def frames_with_alpha(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
                          source_alpha: np.ndarray, intensity: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Like frames(), plus the matte of each frame: source_alpha (float (S,S) 0..1, a matte of face.crop) warped
        with the very same map as the pixels, so it is exact and temporally stable at no extra cost."""
        yield from self._batches(face, speech, emotion, pose, intensity, source_alpha)

    def frames_on_background(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
                             source_alpha: np.ndarray, colour: tuple[int, int, int],
                             intensity: float = 1.0) -> Iterator[np.ndarray]:
        """frames() on a solid colour, at the cost of frames(): the photo is composited on the colour once (with its
        matte) and that is what gets warped. Bilinear warping is linear, so this equals compositing each warped
        frame with the warped matte (the painted mouth and lids lie inside the face, where the matte is 1)."""
        alpha = np.clip(source_alpha, 0, 1).astype(np.float32)[..., None]
        on_colour = face.crop * alpha + np.float32(colour) * (1 - alpha)
        mesh = self.mesh(face)
        composited = Mesh(**{**mesh.__dict__, "rgb": np.clip(on_colour + 0.5, 0, 255).astype(np.uint8)})
        yield from (rgb for rgb, _ in self._batches(face, speech, emotion, pose, intensity, None, composited))
