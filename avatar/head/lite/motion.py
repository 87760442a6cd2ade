"""Head motion of the lite engine: a pose row (yaw, pitch, roll, translation) applied to the mesh vertices."""
from __future__ import annotations

import math

import numpy as np

from .mesh import Mesh

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

