"""The multi-session benchmark's own logic, in local mode (ray mode runs in tests/cluster/test_ray.py's instance)."""
from __future__ import annotations

import json

from avatar.bench_sessions import run_sessions, session_clips, sweep
from avatar.core.config import AvatarConfig


def test_sweep_doubles_up_to_the_maximum():
    assert sweep(1) == [1] and sweep(4) == [1, 2, 4] and sweep(10) == [1, 2, 4, 8, 10]


def test_clips_are_distinct_and_of_the_asked_length(shared_dir):
    clips = session_clips(3, 2.0)
    assert [round(c.duration_s, 2) for c in clips] == [2.0, 2.0, 2.0]
    assert not (clips[0].samples == clips[1].samples).all()


def test_local_rounds_report_rtf_and_the_largest_realtime_count(shared_dir, tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path / "none"), output_dir=str(tmp_path / "out"), device="cpu")
    result = run_sessions(cfg, 2, clip_s=1.0, modes=("local",))
    json.dumps(result)
    rounds = result["local"]["rounds"]
    assert [r["sessions"] for r in rounds] == [1, 2] and not any(r["errors"] for r in rounds)
    assert all(len(r["rtf_per_session"]) == r["sessions"] and r["aggregate_fps"] > 0 for r in rounds)
    assert result["local"]["largest_realtime_sessions"] in (0, 1, 2)


def test_json_output_is_the_only_thing_on_stdout_even_with_ray(shared_dir, tmp_path):
    """`bench --sessions --json` in ray mode: Ray writes to stdout itself while Serve shuts down; the command's
    stdout must still be exactly one JSON document (scripts pipe it into other tools)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = tmp_path / "c.toml"
    config.write_text(f'weights_dir = "{tmp_path / "none"}"\noutput_dir = "{tmp_path / "out"}"\ndevice = "cpu"\n'
                      '[cluster]\nnum_cpus = 2\n')
    run = subprocess.run([sys.executable, "-m", "avatar", "--config", str(config), "bench", "--sessions", "1",
                          "--clip-s", "1", "--size", "256", "--modes", "ray", "--json"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)  # fails on anything else printed there
    assert result["ray"]["rounds"][0]["sessions"] == 1 and not result["ray"]["rounds"][0]["errors"]
