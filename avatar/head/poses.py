"""The head-pose library: assets/poses/<name>.npy, float32 (T, 6) = yaw, pitch, roll (degrees) + translation x, y, z
(EAT's t units) at 25 fps, written by scripts/make_poses.py. A sequence is looped to any length by ping-pong
(forward, then backward), which never jumps at the seam."""
from __future__ import annotations

import re

import numpy as np

from avatar.core.errors import UnknownPose
from avatar.core.paths import ASSETS_DIR
from avatar.core.types import FPS, PoseSequence

POSES_DIR = ASSETS_DIR / "poses"
_NAME = re.compile(r"[a-z0-9_-]{1,40}")


def list_poses() -> list[str]:
    return sorted(p.stem for p in POSES_DIR.glob("*.npy"))


def ping_pong_indices(length: int, n_frames: int) -> np.ndarray:
    """Indices 0,1,..,L-1,L-2,..,1,0,1,.. : a sequence of `length` played back and forth for n_frames."""
    if length <= 1:
        return np.zeros(n_frames, dtype=np.int64)
    period = 2 * (length - 1)
    k = np.arange(n_frames) % period
    return np.where(k < length, k, period - k)


def load_pose(name: str, n_frames: int, start_frame: int = 0) -> PoseSequence:
    """The named sequence looped (ping-pong) or cut to exactly n_frames frames, from frame start_frame of that
    motion: consecutive clips of one reply (start_frame = the frames already shown) continue without a jump."""
    key = (name or "").strip().lower()
    path = POSES_DIR / f"{key}.npy"
    if not _NAME.fullmatch(key) or not path.is_file():
        raise UnknownPose(f"unknown head pose {name!r}; choose one of: {', '.join(list_poses())}")
    table = np.load(path, allow_pickle=False)
    if table.ndim != 2 or table.shape[1] != 6 or len(table) == 0:
        raise UnknownPose(f"pose file {path.name} is malformed: expected (T, 6), got {table.shape}")
    start = max(0, int(start_frame))
    rows = table[ping_pong_indices(len(table), start + max(1, int(n_frames)))[start:]].astype(np.float32)
    return PoseSequence(angles_deg=np.ascontiguousarray(rows[:, :3]), translation=np.ascontiguousarray(rows[:, 3:]),
                        fps=FPS, start_frame=start)


def still_pose(n_frames: int) -> PoseSequence:
    """A motionless head (zeros): for tests and for engines asked for no motion."""
    zeros = np.zeros((max(1, int(n_frames)), 3), np.float32)
    return PoseSequence(angles_deg=zeros, translation=zeros.copy(), fps=FPS)
