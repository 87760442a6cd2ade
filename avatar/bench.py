"""`python -m avatar bench`: per-stage speed on this machine, as JSON.

ASR real-time factor on jfk.flac (../shared/fixtures/speech), TTS real-time factor per language, chat first-token latency and tokens/s, start-up time, lite talking-head frames/s.
Real-time factor = processing seconds / audio seconds (lower is faster).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from .config import AvatarConfig


def bench_asr(system) -> dict:
    from .asr import bench

    return {**bench(system.asr), "goal_rtf": 0.3}  # jfk.flac from ../shared/fixtures/speech


def bench_tts(system) -> dict:
    from .tts import bench

    return {**bench(system.tts), "goal_rtf": 0.1}


def bench_chat(system) -> dict:
    from .chat import bench as chat_bench

    return {"backend": system.status["chat"].backend, **chat_bench(system.chat_model), "goal_first_token_s": 1.0}


def bench_head(system) -> dict:
    """Lite engine frames/s at 256 and 512, with and without matting (scripts/bench_head.py's measurement)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_head", Path(__file__).resolve().parents[1] / "scripts" / "bench_head.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fps = {str(size): module.bench_size(size, 6.0, system.config.head.batch_size, False, system.matting)
           for size in (256, 512)}
    return {"engine": "lite", "matting_backend": system.status["matting"].backend, "fps": fps,
            "goal_fps_512_matting": 25}


def run_bench(cfg: AvatarConfig, stages: list[str]) -> dict:
    from .system import STAGES, AvatarSystem

    t0 = time.perf_counter()
    system = AvatarSystem.load(cfg, stages=STAGES)
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "device": system.device},
                    "startup_s": round(time.perf_counter() - t0, 2), "goal_startup_s": 30,
                    "load_s": {n: round(s.load_s, 2) for n, s in system.status.items()}}
    for name in stages:
        fn = {"asr": bench_asr, "tts": bench_tts, "chat": bench_chat, "head": bench_head}.get(name)
        if fn is None:
            continue
        try:
            result[name] = fn(system)
        except Exception as e:  # report, keep measuring the other stages
            result[name] = {"error": f"{type(e).__name__}: {e}"}
    return result
