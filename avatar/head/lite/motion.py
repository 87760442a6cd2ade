"""Head motion of the lite engine: a pose row (yaw, pitch, roll in degrees, translation) turns the face's vertices
about the neck, so that a degree looks like a degree: the face slides across the head by the axis' distance times
the angle's sine (about 0.1 inter-ocular distances at 4 degrees of yaw), near points (the nose) more than far ones
(the cheeks' contour), and the far side foreshortens. Speech adds small nods on its stressed syllables."""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d

from avatar.core.types import FPS

from .mesh import Mesh

AXIS_BEHIND_IOD = 1.3  # the turning axis (top of the spine) lies this far behind the face plane, in face units
AXIS_BELOW_IOD = 0.8  # and this far below the landmarks' centre (nods turn the chin more than the brow)
NOD_DEG = 2.5  # speech nods at full emphasis, at the liveliest poses (scaled down for calmer ones)


def _rotated(a: np.ndarray, b: np.ndarray, z: np.ndarray, yaw: float, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Face-frame coordinates (a along u, b along v, z towards the camera; px, about the axis) after yaw then
    pitch; orthographic projection. Positive yaw moves near points towards +u, positive pitch moves them up."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    a1, z1 = a * cy + z * sy, z * cy - a * sy
    return a1, b * cp - z1 * sp


def posed_vertices(mesh: Mesh, expressed: np.ndarray, pose_row: np.ndarray) -> np.ndarray:
    """Expression-moved vertices -> head-posed vertices. pose_row: yaw, pitch, roll (deg), tx, ty, tz (t units);
    each vertex follows by its head weight (the frame's border not at all, the neck partly)."""
    yaw, pitch, roll, tx, ty, tz = (float(x) for x in pose_row)
    size, iod = mesh.rgb.shape[0], mesh.iod_px
    rel = expressed - mesh.pivot
    below, behind = AXIS_BELOW_IOD * iod, AXIS_BEHIND_IOD * iod
    a, b = _rotated(rel @ mesh.u, rel @ mesh.v - below, mesh.depth * iod + behind, math.radians(yaw),
                    math.radians(pitch))
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    turned = np.outer(a, mesh.u) + np.outer(b + below, mesh.v)
    rot = np.array([[c, -s], [s, c]], np.float32) * (1.0 + tz)
    moved = turned @ rot.T + mesh.pivot + np.array([tx, ty], np.float32) * (size / 2)
    return (expressed + mesh.head_weight[:, None] * (moved - expressed)).astype(np.float32)


def speech_nods(opening: np.ndarray, pitch_range_deg: float) -> np.ndarray:
    """(n,) pitch degrees added while speaking: the head dips on stressed syllables (peaks of the mouth's opening
    above its slower average) and comes back in pauses. Calm poses nod less (pitch_range_deg: the pose's own)."""
    if len(opening) < 3:
        return np.zeros(len(opening), np.float32)
    fast = gaussian_filter1d(opening.astype(np.float64), 0.12 * FPS)
    slow = gaussian_filter1d(opening.astype(np.float64), 0.6 * FPS)
    emphasis = np.clip(fast - slow, 0, None) / 0.25
    scale = NOD_DEG * pitch_range_deg / (pitch_range_deg + 3.0)
    return (-scale * np.clip(emphasis, 0, 1)).astype(np.float32)
