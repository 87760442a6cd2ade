"""Landmark topology of the lite engine's mesh (iBUG 68, 0-based, + cheek and forehead points) and the per-point
tables in face units (inter-ocular distances): depth, jaw drop, mouth width."""
from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- landmark topology (iBUG 68, 0-based)
PAIRS = [(i, 16 - i) for i in range(8)] + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
          (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59),
          (56, 58), (60, 64), (61, 63), (65, 67), (68, 69), (70, 71), (72, 76), (73, 75)]
N_FACE = 77  # 68 landmarks + cheeks 68..71 + forehead 72..76
MIRROR = np.arange(N_FACE)
for _a, _b in PAIRS:
    MIRROR[_a], MIRROR[_b] = _b, _a
INNER_LIP = [60, 61, 62, 63, 64, 65, 66, 67]
UPPER_INNER = [60, 61, 62, 63, 64]
LOWER_INNER = [60, 67, 66, 65, 64]
FOREHEAD_FROM_BROW = {72: [17], 73: [19], 74: [21, 22], 75: [24], 76: [26]}

# depth in front of the face's mean plane (face units): yaw/pitch shift near points more than far ones
DEPTH = {27: 0.15, 28: 0.25, 29: 0.35, 30: 0.5, 31: 0.3, 32: 0.35, 33: 0.4, 34: 0.35, 35: 0.3,
          **{i: 0.05 for i in range(17, 27)}, **{i: 0.15 for i in range(48, 68)}, 48: 0.05, 54: 0.05,
          0: -0.35, 1: -0.3, 2: -0.25, 3: -0.2, 4: -0.1, 5: 0.0, 6: 0.05, 7: 0.1, 8: 0.1,
          16: -0.35, 15: -0.3, 14: -0.25, 13: -0.2, 12: -0.1, 11: 0.0, 10: 0.05, 9: 0.1, 70: 0.05, 71: 0.05}

# jaw drop per unit opening (fraction of the full drop, along v)
OPEN_DV = {66: 1.0, 65: 0.85, 67: 0.85, 57: 0.95, 56: 0.85, 58: 0.85, 55: 0.5, 59: 0.5, 48: 0.3, 54: 0.3,
            60: 0.3, 64: 0.3, 61: -0.08, 62: -0.08, 63: -0.08, 49: -0.04, 50: -0.05, 51: -0.05, 52: -0.05,
            53: -0.04, 8: 0.85, 7: 0.75, 9: 0.75, 6: 0.55, 10: 0.55, 5: 0.35, 11: 0.35, 4: 0.18, 12: 0.18,
            3: 0.05, 13: 0.05, 70: 0.3, 71: 0.3}
# lip shapes per unit, (du, dv) in face units for the image-left / centre points (mirrored onto the right):
# spread (i, e, s): corners out and a little up, lips thinner
SPREAD = {48: (-0.08, -0.012), 60: (-0.07, -0.006), 49: (-0.04, 0.0), 59: (-0.04, 0.0), 61: (-0.025, 0.0),
          67: (-0.025, 0.0), 51: (0.0, 0.008), 57: (0.0, -0.008)}
# rounded (o, u, w, sh): corners in, lips pushed forward (seen thicker), the opening rounder
ROUND = {48: (0.15, 0.0), 60: (0.13, 0.0), 49: (0.07, -0.012), 59: (0.07, 0.012), 61: (0.06, -0.006),
         67: (0.06, 0.006), 50: (0.025, -0.025), 51: (0.0, -0.03), 58: (0.025, 0.025), 57: (0.0, 0.03),
         62: (0.0, -0.01), 66: (0.0, 0.01)}
# pressed (p, b, m): the lips rolled in a little, corners in
PRESS = {51: (0.0, 0.015), 57: (0.0, -0.015), 50: (0.0, 0.01), 58: (0.0, -0.01), 48: (0.01, 0.0), 60: (0.01, 0.0)}



def face_units(spec: dict[int, tuple[float, float]], mirrored: bool = True) -> np.ndarray:
    """(N_FACE, 2) offsets in face units from a table of image-left / centre points, mirrored onto the right side
    (du negated) unless the table is one-sided; forehead points follow their brows by 40%."""
    units = np.zeros((N_FACE, 2), np.float32)
    for index, (du, dv) in spec.items():
        units[index] += (du, dv)
        if mirrored and MIRROR[index] != index:
            units[MIRROR[index]] += (-du, dv)
    for fore, brows in FOREHEAD_FROM_BROW.items():
        units[fore] += 0.4 * units[brows].mean(0)
    return units


def face_frame(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(u, v, inter-ocular distance px) of 68 landmarks: u from the image-left eye's centre to the other's, v down."""
    left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
    axis = right_eye - left_eye
    iod = float(np.linalg.norm(axis))
    u = axis / max(iod, 1e-6)
    return u.astype(np.float32), np.array([-u[1], u[0]], np.float32), max(iod, 1.0)
