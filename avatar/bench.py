"""`python -m avatar bench`: per-stage speed on this machine, as JSON.

ASR real-time factor on jfk.flac (../shared/fixtures/speech), TTS real-time factor per language, chat first-token latency and tokens/s, start-up time, lite talking-head frames/s.
Real-time factor = processing seconds / audio seconds (lower is faster).
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.paths import SPEECH_FIXTURES


def bench_asr(system) -> dict:
    from .asr import bench

    return {**bench(system.asr), "goal_rtf": 0.3}  # jfk.flac from ../shared/fixtures/speech


def bench_tts(system) -> dict:
    from .tts import bench

    return {**bench(system.tts), "goal_rtf": 0.1}


def bench_chat(system) -> dict:
    from .chat import bench as chat_bench

    return {"backend": system.status["chat"].backend, **chat_bench(system.chat_model), "goal_first_token_s": 1.0}


SPEECH = SPEECH_FIXTURES / "jfk.flac"
GREEN = (0, 255, 0)


def _speech(seconds: float):
    from avatar.core.media import load_audio
    from avatar.core.types import Audio

    audio = load_audio(SPEECH, 16000)
    reps = int(np.ceil(seconds / audio.duration_s))
    return Audio(np.tile(audio.samples, reps)[: int(seconds * 16000)], 16000)


def _fps(batches) -> float:
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += len(batch)
    return count / (time.perf_counter() - start)


def bench_lite_size(size: int, seconds: float, batch: int, encode: bool, matting) -> dict:
    from skimage import data

    from avatar.head import n_frames
    from avatar.head.lite import LiteEngine
    from avatar.head.poses import load_pose
    from avatar.render import composited_frames, render_clip, source_cutout, source_matte

    engine = LiteEngine(size=size, batch_size=batch)
    start = time.perf_counter()
    face = engine.prepare(data.astronaut())
    prepare_s = time.perf_counter() - start
    speech = _speech(seconds)
    pose = load_pose("talking", n_frames(speech.duration_s))
    result = {"prepare_s": round(prepare_s, 3),
              "engine_fps": round(_fps(engine.frames(face, speech, "happy", pose)), 1)}
    start = time.perf_counter()
    source_matte(face, matting)
    result["photo_matte_once_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    source_cutout(face, matting)  # the matte's edge cleaned of the old backdrop, once per photo
    result["photo_edge_clean_once_s"] = round(time.perf_counter() - start, 3)
    result["matting_fps"] = round(_fps(composited_frames(engine, face, speech, "happy", pose, GREEN, matting)), 1)
    short = _speech(min(seconds, 2.0))
    result["per_frame_matting_fps"] = round(
        _fps(matting.clip(engine.frames(face, short, "happy", pose), GREEN)), 1)
    if encode:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            render_clip(engine, face, speech, "happy", pose, GREEN, size, matting, Path(tmp) / "bench.mp4")
            result["matting_encode_fps"] = round(n_frames(speech.duration_s) / (time.perf_counter() - start), 1)
    return result


def bench_head(system) -> dict:
    """Lite engine frames/s at 256 and 512, with and without matting (also: scripts/bench_head.py)."""
    fps = {str(size): bench_lite_size(size, 6.0, system.config.head.batch_size, False, system.matting)
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
