"""The per-photo mesh of the lite engine and the warp it drives.

- the mesh: the 68 landmarks + cheek and forehead points + a ring around the head + fixed points on the frame border,
  Delaunay-triangulated once (on a copy with the mouth held open, so the inner-mouth triangles join only inner lips);
- per frame the vertices move; each triangle gives a target->source affine;
- the triangle index of every point of a coarse grid (MAP_GRID_N points per side) is rasterised with
  cv2.fillConvexPoly, the grid map is evaluated from the per-triangle affines and upsampled bilinearly (the map is
  continuous, so this is nearly exact): `warp_map`, applied with cv2.remap.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..base import PreparedFace
from .neutral import closed_lips, neutral_offsets
from .topology import DEPTH, N_FACE, OPEN_DV, PRESS, ROUND, SPREAD, face_frame, face_units

MAP_GRID_N = 128  # warp-map grid points per side (upsampled bilinearly: 2 px steps at 256, 4 px at 512)
MAX_OPEN_IOD = 0.30  # jaw drop of a wide-open /a/, in inter-ocular distances
N_RING = 20  # vertices on the ring around the head
N_BORDER_PER_SIDE = 5  # fixed vertices per frame edge (corners included)
MIN_AREA_RATIO = 0.02  # a triangle squeezed below this share of its area in the photo is not drawn
RING_DEPTH = -0.8  # the ring around the head lies near the head's widest outline, far behind the face


@dataclass
class Mesh:
    source: np.ndarray  # (V,2) float32 vertices in crop pixels
    rest: np.ndarray  # (V,2) float32: the vertices with the photo's own expression taken out (neutral.py)
    triangles: np.ndarray  # (T,3) int32
    head_weight: np.ndarray  # (V,) how much of the head's pose each vertex follows (border 0)
    depth: np.ndarray  # (V,) face units in front of the face plane
    pivot: np.ndarray  # (2,) head rotation/scale centre
    u: np.ndarray  # (2,) face x axis (towards the image-right eye)
    v: np.ndarray  # (2,) face y axis (down)
    iod_px: float  # inter-ocular distance
    mouth_bases: dict[str, np.ndarray]  # (V,2) px per unit of "open" (jaw), "spread", "round", "press"
    rgb: np.ndarray  # (S,S,3) uint8: the crop
    alpha: np.ndarray | None  # (S,S) float32 matte of the crop, warped along when given
    grid: np.ndarray  # (G,G,2) float32 output-pixel coordinates of the map grid


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


def _mouth_bases(u: np.ndarray, v: np.ndarray, iod: float, n_vertices: int) -> dict[str, np.ndarray]:
    bases = {}
    for name, spec in (("spread", SPREAD), ("round", ROUND), ("press", PRESS)):
        units = face_units(spec)
        bases[name] = np.zeros((n_vertices, 2), np.float32)
        bases[name][:N_FACE] = (np.outer(units[:, 0], u) + np.outer(units[:, 1], v)) * iod
    bases["open"] = np.zeros((n_vertices, 2), np.float32)
    for index, amount in OPEN_DV.items():
        bases["open"][index] = amount * MAX_OPEN_IOD * iod * v
    return bases


def _triangulate(vertices: np.ndarray, v: np.ndarray, iod: float) -> np.ndarray:
    """Delaunay on a copy with the mouth open and the eyes wide, so no triangle bridges the lips or the lids."""
    from scipy.spatial import Delaunay

    opened = vertices.copy()
    opened[[65, 66, 67, 55, 56, 57, 58, 59]] += 0.25 * iod * v
    opened[[37, 38, 43, 44]] -= 0.05 * iod * v
    return Delaunay(opened.astype(np.float64)).simplices.astype(np.int32)


def build_mesh(face: PreparedFace, alpha: np.ndarray | None = None) -> Mesh:
    crop, pts68 = face.crop, face.landmarks.astype(np.float32)
    size = crop.shape[0]
    u, v, iod = face_frame(pts68)
    ring, ring_w = _ring(pts68, u, v, iod, size)
    border = _border(size)
    vertices = np.concatenate([pts68, _extra_points(pts68, v, iod), ring, border]).astype(np.float32)
    n_v = len(vertices)
    weight = np.concatenate([np.ones(N_FACE), ring_w, np.zeros(len(border))]).astype(np.float32)
    depth = np.zeros(n_v, np.float32)
    for index, d in DEPTH.items():
        depth[index] = d
    depth[N_FACE: N_FACE + N_RING] = RING_DEPTH
    grid_n = min(size, MAP_GRID_N)
    g = (np.arange(grid_n, dtype=np.float32) + 0.5) * (size / grid_n) - 0.5
    rest = vertices + neutral_offsets(pts68, n_v)
    return Mesh(vertices, rest, _triangulate(vertices, v, iod), weight, depth, pts68.mean(0), u, v, iod,
                _mouth_bases(u, v, iod, n_v), np.ascontiguousarray(closed_lips(crop, pts68)),
                None if alpha is None else alpha.astype(np.float32), np.stack(np.meshgrid(g, g), axis=-1))


def _target_to_source(target: np.ndarray, source: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-triangle (T,6) coefficients [a,b,c,d,e,f]: src_x = a x + b y + c, src_y = d x + e y + f; and which
    triangles have area (degenerate ones are not rasterised). Closed form: M = [q1-q0, q2-q0] [p1-p0, p2-p0]^-1.

    A triangle squeezed to a sliver (the inner mouth of a smiling photo once its lips are closed) is degenerate too:
    its affine would fling its few pixels far across the photo (a sliver of 1/50 of its area samples up to 50x
    away); so is one folded over. Its neighbours cover it instead."""
    p, q = target[tris].astype(np.float64), source[tris].astype(np.float64)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    f1, f2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    source_det = f1[:, 0] * f2[:, 1] - f1[:, 1] * f2[:, 0]
    ok = (det * np.sign(source_det) > np.maximum(1e-3, MIN_AREA_RATIO * np.abs(source_det)))  # not folded over
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # inverse of the 2x2 matrix with columns e1, e2
    inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1) * inv_det[:, None, None]
    m = np.stack([f1, f2], axis=2) @ inv  # (T,2,2): source edges = m @ target edges
    offset = q[:, 0] - np.einsum("tij,tj->ti", m, p[:, 0])
    coef = np.concatenate([m[:, 0], offset[:, :1], m[:, 1], offset[:, 1:]], axis=1)
    return coef.astype(np.float32), ok


def _bounded(coef: np.ndarray, mesh: Mesh) -> np.ndarray:
    """(T+1, 10): each triangle's affine (6) and its source box (low x, y, high x, y); the last row is the identity
    for points in no triangle. The box matters for a point just outside a thin triangle (rasterised on its
    boundary): it must not extrapolate the triangle's steep affine far away."""
    corners = mesh.source[mesh.triangles]
    rows = np.concatenate([coef, corners.min(1) - 1.0, corners.max(1) + 1.0], axis=1)
    identity = np.array([[1, 0, 0, 0, 1, 0, -np.inf, -np.inf, np.inf, np.inf]], np.float32)
    return np.concatenate([rows, identity]).astype(np.float32)


def _evaluate(index: np.ndarray, table: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    c = table[index]
    points = np.stack([c[..., 0] * gx + c[..., 1] * gy + c[..., 2], c[..., 3] * gx + c[..., 4] * gy + c[..., 5]], -1)
    return np.clip(points, c[..., 6:8], c[..., 8:10])


def _rasterise(index: np.ndarray, target_px: np.ndarray, mesh: Mesh, ok: np.ndarray) -> None:
    """Writes each drawable triangle's number into index (target_px: vertices in index pixels)."""
    corners = np.round(target_px * 16).astype(np.int32)  # 4 fractional bits
    for k in np.flatnonzero(ok):
        cv2.fillConvexPoly(index, corners[mesh.triangles[k]], int(k), cv2.LINE_8, 4)


@functools.lru_cache(maxsize=2)
def _pixel_coords(size: int) -> np.ndarray:
    xs = np.arange(size, dtype=np.float32)
    return np.stack(np.meshgrid(xs, xs), axis=-1)


def warp_map(mesh: Mesh, target: np.ndarray, exact_box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(S,S,2) float32 remap map: for each output pixel, where to sample the source crop. Evaluated on the coarse
    grid and upsampled; inside exact_box (x0, y0, x1, y1: the mouth, where closed lips make the map jump) per pixel."""
    size = mesh.rgb.shape[0]
    grid_n = mesh.grid.shape[0]
    coef, ok = _target_to_source(target, mesh.source, mesh.triangles)
    table = _bounded(coef, mesh)
    index = np.full((grid_n, grid_n), len(mesh.triangles), np.int16)
    scale = grid_n / size
    _rasterise(index, target * scale - 0.5 * (1 - scale), mesh, ok)
    grid_map = _evaluate(index, table, mesh.grid[..., 0], mesh.grid[..., 1])
    # upsample the displacement, not the map: beyond the outermost grid points resize repeats their values, which
    # for the map would shift the frame's edge pixels by half a grid step; the displacement there is 0
    pixel_map = cv2.resize(grid_map - mesh.grid, (size, size), interpolation=cv2.INTER_LINEAR) + _pixel_coords(size)
    if exact_box is not None:
        x0, y0, x1, y1 = exact_box
        index = np.full((y1 - y0, x1 - x0), len(mesh.triangles), np.int16)
        corners = target[mesh.triangles]
        inside = (corners[..., 0].max(1) >= x0) & (corners[..., 0].min(1) < x1) & (corners[..., 1].max(1) >= y0) & (
            corners[..., 1].min(1) < y1)
        _rasterise(index, target - (x0, y0), mesh, ok & inside)
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        exact = _evaluate(index, table, gx, gy)
        pixel_map[y0:y1, x0:x1] = np.where((index < len(mesh.triangles))[..., None], exact, pixel_map[y0:y1, x0:x1])
    return pixel_map
