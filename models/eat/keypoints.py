"""Head-pose and keypoint arithmetic of EAT (66-bin pose logits, rotation matrices, keypoint transformation).

Quirks kept on purpose (the trained networks depend on them): radians use 3.14, not pi; R = Rx(pitch) Ry(yaw)
Rz(roll); the audio2kp head-pose token uses the bin expectation (0..65) as "degrees".
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NUM_BINS = 66


def bin_expectation(logits: torch.Tensor) -> torch.Tensor:
    """(N, 66) logits -> (N,) expected bin index sum(softmax * [0..65])."""
    idx = torch.arange(NUM_BINS, dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * idx, dim=1)


def headpose_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(N, 66) logits -> (N,) degrees = expectation * 3 - 99."""
    return bin_expectation(logits) * 3 - 99


def rotation_parts(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                              torch.Tensor]:
    """Angles (N,) in "degrees" -> (yaw_rad, pitch_rad, roll_rad (N,1)), yaw_mat, pitch_mat, roll_mat (N,3,3),
    rot = pitch_mat @ yaw_mat @ roll_mat (N,3,3)."""
    y, p, r = (a.unsqueeze(1) / 180 * 3.14 for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    pitch_mat = torch.cat([one, zero, zero, zero, torch.cos(p), -torch.sin(p), zero, torch.sin(p), torch.cos(p)],
                          dim=1).view(-1, 3, 3)
    yaw_mat = torch.cat([torch.cos(y), zero, torch.sin(y), zero, one, zero, -torch.sin(y), zero, torch.cos(y)],
                        dim=1).view(-1, 3, 3)
    roll_mat = torch.cat([torch.cos(r), -torch.sin(r), zero, torch.sin(r), torch.cos(r), zero, zero, zero, one],
                         dim=1).view(-1, 3, 3)
    rot = torch.einsum("bij,bjk,bkm->bim", pitch_mat, yaw_mat, roll_mat)
    return y, p, r, yaw_mat, pitch_mat, roll_mat, rot


def rotation_matrix(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, roll_deg: torch.Tensor) -> torch.Tensor:
    """(N,) degrees -> (N, 3, 3)."""
    return rotation_parts(yaw_deg, pitch_deg, roll_deg)[-1]


def headpose_token(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The audio2kp 45-d head-pose feature from (N,66) logits and t (N,3):
    [a_yaw, a_pitch, a_roll, rad x3, yaw_mat 9, pitch_mat 9, roll_mat 9, rot 9, t 3] with a = bin expectation."""
    a = [bin_expectation(v) for v in (yaw, pitch, roll)]
    y, p, r, ym, pm, rm, rot = rotation_parts(*a)
    n = t.shape[0]
    return torch.cat([a[0].unsqueeze(1), a[1].unsqueeze(1), a[2].unsqueeze(1), y, p, r,
                      ym.reshape(n, 9), pm.reshape(n, 9), rm.reshape(n, 9), rot.reshape(n, 9), t], dim=1)


def transform_keypoints(kp_canonical: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor,
                        t: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
    """kp (1,15,3) canonical; yaw/pitch/roll (N,66) logits; t (N,3); exp (N,45) -> (N,15,3) = R kp + t + exp."""
    rot = rotation_matrix(headpose_degrees(yaw), headpose_degrees(pitch), headpose_degrees(roll))
    kp_rot = torch.einsum("bmp,bkp->bkm", rot, kp_canonical.expand(rot.shape[0], -1, -1))
    return kp_rot + t.unsqueeze(1) + exp.view(exp.shape[0], -1, 3)


def expression_from_pca(a2kp_emo: torch.Tensor, sidetuning_out: torch.Tensor, pca_u32: torch.Tensor,
                        pca_mean: torch.Tensor, area: float) -> torch.Tensor:
    """exp (N,45) = (emo (N,32) @ U[:, :32].T + mean (45,) + edn (N,45)) * source ConvexHull volume."""
    return (a2kp_emo @ pca_u32.T + pca_mean + sidetuning_out) * area


def align_driving(kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """Shift driving keypoints (all frames of the clip) so their mean over keypoints and frames equals the source
    keypoints' mean (the official clip-wide shift)."""
    return kp_driving + (kp_source.mean(1)[0] - kp_driving.mean(1).mean(0))


def convex_hull_volume(points: np.ndarray) -> float:
    """Volume of the 3-D convex hull of (K,3) points: scipy's Qhull (as the official code) when installed,
    else a brute-force facet enumeration (exact for points in general position)."""
    pts = np.asarray(points, dtype=np.float64)
    try:
        from scipy.spatial import ConvexHull  # lazy: only needed once per source image
    except ImportError:
        return _hull_volume_bruteforce(pts)
    return float(ConvexHull(pts).volume)


def _hull_volume_bruteforce(pts: np.ndarray) -> float:
    """Sum of tetrahedra (centroid, facet) over triangles with every other point on one side."""
    from itertools import combinations

    tri = np.array(list(combinations(range(len(pts)), 3)))
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    normal = np.cross(b - a, c - a)
    side = np.einsum("tj,tpj->tp", normal, pts[None, :, :] - a[:, None, :])
    tol = 1e-12 * np.abs(side).max()
    facet = (side <= tol).all(axis=1) | (side >= -tol).all(axis=1)
    centre = pts.mean(axis=0)
    vol = np.abs(np.einsum("tj,tj->t", normal[facet], a[facet] - centre)) / 6.0
    return float(vol.sum())
