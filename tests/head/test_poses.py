"""Pose library: the committed sequences, ping-pong looping, errors."""
import numpy as np
import pytest

from avatar.core.errors import UnknownPose
from avatar.head.poses import POSES_DIR, list_poses, load_pose, ping_pong_indices
from avatar.core.types import FPS


def test_library_has_the_four_presets_small_and_smooth():
    assert {"still", "nod", "talking", "lively"} <= set(list_poses())
    for name in list_poses():
        path = POSES_DIR / f"{name}.npy"
        table = np.load(path)
        assert table.dtype == np.float32 and table.shape[1] == 6
        assert 10 * FPS <= len(table) <= 20 * FPS
        assert path.stat().st_size < 16_000
        assert np.abs(table[:, :3]).max() < 15  # degrees: a natural head, not a spin
        assert np.abs(table[:, 3:]).max() <= 0.05  # EAT t units
        step = np.abs(np.diff(table, axis=0)).max(axis=0)
        peak = np.abs(table).max(axis=0)
        assert np.all(step <= 0.15 * peak + 1e-6), f"{name} jumps between frames: {step} vs peak {peak}"


def test_presets_differ_in_liveliness():
    energy = {n: float(np.abs(load_pose(n, 300).angles_deg).mean()) for n in ("still", "talking", "lively")}
    assert energy["still"] < energy["talking"] < energy["lively"]
    nod = load_pose("nod", 300).angles_deg
    assert nod[:, 1].std() > 2 * nod[:, 0].std()  # nodding is mostly pitch


def test_ping_pong_loops_without_a_seam_jump():
    assert ping_pong_indices(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    base = np.load(POSES_DIR / "talking.npy")
    long = load_pose("talking", 5 * len(base) + 7)
    assert len(long) == 5 * len(base) + 7
    rows = np.concatenate([long.angles_deg, long.translation], axis=1)
    assert np.abs(np.diff(rows, axis=0)).max() <= np.abs(np.diff(base, axis=0)).max() + 1e-6
    np.testing.assert_array_equal(rows[: len(base)], base)


def test_consecutive_clips_continue_the_motion():
    """A reply's sentences are separate clips: the second starts where the first stopped (it restarted at frame 0,
    a visible head jump at every sentence)."""
    whole = load_pose("lively", 250)
    first, second = load_pose("lively", 90), load_pose("lively", 160, start_frame=90)
    joined = np.concatenate([first.angles_deg, second.angles_deg])
    assert np.array_equal(joined, whole.angles_deg) and second.start_frame == 90
    assert np.array_equal(np.concatenate([first.translation, second.translation]), whole.translation)


def test_short_request_is_cut_and_pose_has_the_hand_off_format():
    p = load_pose("lively", 3)
    assert len(p) == 3 and p.fps == FPS
    assert p.angles_deg.shape == (3, 3) and p.translation.shape == (3, 3)
    assert p.angles_deg.dtype == np.float32


@pytest.mark.parametrize("bad", ["dance", "", "../lively", "LIVELY.npy"])
def test_unknown_pose_names_the_choices(bad):
    with pytest.raises(UnknownPose, match="choose one of: .*talking"):
        load_pose(bad, 10)


def test_generator_reproduces_the_committed_files():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_poses.py"
    assert subprocess.run([sys.executable, str(script), "--check"], capture_output=True).returncode == 0
