"""`python -m avatar bench --sessions N --json`: N sessions render a clip each at the same time, in local mode and in
ray mode, side by side in one run.

Local mode is the app as it serves a GPU today: one render at a time (its single GPU queue), so the N-th session
waits for the others. Ray mode sends every session's clip to the render deployment at once, whose replicas batch
the frames of all sessions. Reported per mode and N: aggregate frames/s, each session's real-time factor (wall time
/ clip length, < 1 = faster than real time), and the largest N for which every session stays faster than real time.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.media import load_audio
from avatar.core.paths import SPEECH_FIXTURES
from avatar.core.types import FPS, Audio

RENDER_STAGES = ("head", "matting", "enhance")


def sweep(max_sessions: int) -> list[int]:
    """1, 2, 4, ... up to max_sessions (which is always included)."""
    counts, n = [], 1
    while n < max_sessions:
        counts.append(n)
        n *= 2
    return counts + [max_sessions]


def session_clips(count: int, clip_s: float) -> list[Audio]:
    """Distinct clips of clip_s seconds cut from the speech fixture (looped), one per session."""
    speech = load_audio(SPEECH_FIXTURES / "jfk.flac", 44100)
    n = int(clip_s * speech.sample_rate)
    looped = np.tile(speech.samples, int(np.ceil((n * (count + 1)) / len(speech.samples))) + 1)
    step = len(speech.samples) // max(1, count)
    return [Audio(looped[k * step: k * step + n].copy(), speech.sample_rate) for k in range(count)]


def run_round(system, photo: np.ndarray, clips: list[Audio], size: int, enhance: bool, one_at_a_time: bool,
              out_dir) -> dict:
    """Every clip rendered by its own thread; local mode serialises them like the app's GPU queue."""
    gate = threading.Lock() if one_at_a_time else None
    walls: list[float] = [0.0] * len(clips)
    errors: list[str] = []
    start = time.perf_counter()

    def session(k: int) -> None:
        try:
            if gate is not None:
                with gate:
                    system.render(photo, clips[k], "happy", "talking", "#2f6f4f", size, enhance,
                                  out_path=out_dir / f"s{k}.mp4")
            else:
                system.render(photo, clips[k], "happy", "talking", "#2f6f4f", size, enhance,
                              out_path=out_dir / f"s{k}.mp4")
        except Exception as e:  # noqa: BLE001 - reported in the JSON
            errors.append(f"session {k}: {type(e).__name__}: {e}")
        walls[k] = time.perf_counter() - start

    threads = [threading.Thread(target=session, args=(k,)) for k in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = max(walls)
    clip_s = clips[0].duration_s
    rtfs = [round(w / clip_s, 3) for w in walls]
    return {"sessions": len(clips), "wall_s": round(total, 2),
            "aggregate_fps": round(len(clips) * clip_s * FPS / total, 1), "rtf_per_session": rtfs,
            "max_rtf": max(rtfs), "errors": errors}


def bench_mode(cfg: AvatarConfig, mode: str, max_sessions: int, clip_s: float, size: int, enhance: bool) -> dict:
    import tempfile
    from pathlib import Path

    from skimage import data

    from .system import AvatarSystem

    t0 = time.perf_counter()
    system = AvatarSystem.load(cfg.replace(**{"cluster.mode": mode}), stages=RENDER_STAGES)
    out: dict = {"mode": mode, "startup_s": round(time.perf_counter() - t0, 1),
                 "head": system.status["head"].backend, "enhance": system.status["enhance"].backend, "rounds": []}
    photo = data.astronaut()
    system.render(photo, session_clips(1, 1.0)[0], "neutral", "still", "#2f6f4f", size, enhance,
                  out_path=Path(tempfile.mkdtemp()) / "warm.mp4")  # compile / caches out of the timing
    try:
        for n in sweep(max_sessions):
            with tempfile.TemporaryDirectory() as tmp:
                out["rounds"].append(run_round(system, photo, session_clips(n, clip_s), size, enhance,
                                               mode == "local", Path(tmp)))
        if mode == "ray":
            batches = system.remote.status()["batches"]
            out["enhance_batches"] = {"calls": len(batches), "max_clips": max((b[0] for b in batches), default=0),
                                      "mean_frames": round(float(np.mean([b[1] for b in batches])), 1)
                                      if batches else 0}
    finally:
        if mode == "ray":
            from .cluster.serve import shutdown

            shutdown()
    realtime = [r["sessions"] for r in out["rounds"] if r["max_rtf"] < 1.0 and not r["errors"]]
    out["largest_realtime_sessions"] = max(realtime, default=0)
    return out


def run_sessions(cfg: AvatarConfig, max_sessions: int, clip_s: float = 10.0, size: int | None = None,
                 enhance: bool = False, modes: tuple[str, ...] = ("local", "ray")) -> dict:
    size = size or cfg.head.size
    result: dict = {"clip_s": clip_s, "size": size, "enhance": enhance, "fps": FPS}
    for mode in modes:
        result[mode] = bench_mode(cfg, mode, max_sessions, clip_s, size, enhance)
    if "local" in result and "ray" in result:
        one = result["local"]["rounds"][0]["aggregate_fps"]
        best = max(r["aggregate_fps"] for r in result["ray"]["rounds"])
        result["ray_vs_local_one_session_fps"] = round(best / one, 2) if one else None
    return result
