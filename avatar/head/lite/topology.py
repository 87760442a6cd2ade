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
WIDTH_DU = {48: -0.05, 60: -0.05, 54: 0.05, 64: 0.05, 49: -0.025, 59: -0.025, 53: 0.025, 55: 0.025,
             61: -0.015, 67: -0.015, 63: 0.015, 65: 0.015}
BLINK_PAIRS = [(37, 41), (38, 40), (43, 47), (44, 46)]  # (upper lid, lower lid)
BLINK_MESH_SHARE = 0.3  # part of a blink done by moving the lid vertices; the rest is a painted lid
# per eye: upper lid, lower lid (corner to corner), brow
EYES = [([36, 37, 38, 39], [36, 41, 40, 39], [17, 18, 19, 20, 21]),
         ([42, 43, 44, 45], [42, 47, 46, 45], [22, 23, 24, 25, 26])]

