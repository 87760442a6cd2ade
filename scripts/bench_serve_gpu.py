#!/usr/bin/env python3
"""Ray Serve on one GPU (issue 21): bench_render_gpu's render path (EAT keypoints + generator bf16 -> MODNet +
GFPGAN 512 fp16 -> uint8 frames on the host) as one Serve deployment holding the GPU, built like the app's render
replica (avatar/cluster/serve.py): every clip runs in its own thread, and the enhancement of its frame batches goes
through one `@serve.batch` method, so frames of all the sessions in flight are enhanced together.

N sessions ask for a --clip-s clip at the same moment, for every N of --sessions. Prints one JSON object: per N the
aggregate frames/s, each session's real-time factor (its clip's wall time from the common start / clip length),
the enhancement calls' sizes (clips and frames per call), and the gain over one session at a time; and the largest
N at which every session stayed faster than real time (per --streams choice too). "One at a time" is local mode's
way, on the same replica: clips one after another, each enhancing its own frames directly (two generator batches per
enhancement call, no batch wait). Torch + Ray only (seeded weights), so it runs on the GPU machine without the app's
other dependencies; Ray travels there as the archive scripts/pack_ray.sh makes.

    python scripts/bench_serve_gpu.py --sessions 1,4,8,10,12 --clip-s 10 --streams default,per-thread
    python scripts/bench_serve_gpu.py --smoke      # CPU: stand-in networks, checks the Serve plumbing only
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FPS = 25
APP = "bench-render-gpu"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", default="1,2,4,8,10,12", help="numbers of concurrent sessions, comma separated")
    p.add_argument("--clip-s", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=32, help="generator frames per call")
    p.add_argument("--enhance-batch", type=int, default=64, help="MODNet + GFPGAN frames per network call")
    p.add_argument("--max-batch-size", type=int, default=8, help="frame batches (any sessions) per enhancement call")
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--compile-keypoints", action="store_true", help="torch.compile EAT's audio2kp too")
    p.add_argument("--streams", default="default",
                   help="comma separated: default (every thread queues on the device's one default stream) and/or "
                        "per-thread (each clip thread and the enhancement thread its own CUDA stream, so kernels of "
                        "different sessions can run side by side); every N runs once per choice")
    p.add_argument("--shared", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, stand-in networks: checks the Serve plumbing")
    args = p.parse_args()
    args.sessions = sorted({int(n) for n in args.sessions.split(",") if n.strip()})
    args.streams = [m.strip() for m in args.streams.split(",") if m.strip()]
    if not set(args.streams) <= {"default", "per-thread"} or not args.streams:
        p.error("--streams takes default and/or per-thread")
    if args.smoke:
        args.clip_s = min(args.clip_s, 2.0)
    return args


# ---------------------------------------------------------------- the networks (real or stand-in)
def build_networks(args: argparse.Namespace):
    """(clip_batches() -> the clip's uint8 generator batches, enhance_on_device(frames) -> uint8 tensor),
    warmed up."""
    if args.smoke:
        return _standins(args)
    import torch
    from bench_turn_gpu import Enhance, Head

    args.compile, args.first_frames, args.clause_s = True, args.batch, args.clip_s  # the names Head reads
    head = Head(args)
    enhance = Enhance(argparse.Namespace(**vars(args) | {"first_frames": args.enhance_batch}))

    def clip_batches():
        with torch.inference_mode():
            kp = head.renderer.driving_keypoints(head.state, head.he, head.n,
                                                 lambda a, b: head.window(head.inputs, a, b))
        return head.renderer.frame_batches(head.state, kp)

    for _ in range(2):  # compile, cuDNN's choices, pinned buffers (every enhancement call is padded to one size)
        for frames in clip_batches():
            enhance(frames)
    torch.cuda.synchronize()
    return clip_batches, enhance.on_gpu


def _standins(args: argparse.Namespace):
    """CPU stand-ins with the real flow (small frames in, 2x larger out) and a little sleep as 'GPU' time; numpy
    only, so the smoke run checks a packed Ray (scripts/pack_ray.sh) in a bare environment too."""
    n = int(round(args.clip_s * FPS))

    def clip_batches():
        for start in range(0, n, args.batch):
            time.sleep(0.002)
            yield np.full((min(args.batch, n - start), 64, 64, 3), start % 256, np.uint8)

    def enhance_on_device(frames: np.ndarray) -> _HostFrames:
        time.sleep(0.001)
        return _HostFrames(frames.repeat(2, axis=1).repeat(2, axis=2))

    return clip_batches, enhance_on_device


class _HostFrames:
    """What host_batches needs of a CPU tensor."""

    device = argparse.Namespace(type="cpu")

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def numpy(self) -> np.ndarray:
        return self.a


# ---------------------------------------------------------------- the deployment
class RenderReplica:
    """Holds the networks; `render` renders one clip, its enhancement batched with the other clips in flight."""

    def __init__(self, opts: dict) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.args = argparse.Namespace(**opts)
        self.clip_batches, self.enhance_on_device = build_networks(self.args)
        self.calls: list[tuple[int, int]] = []
        # own threads: a clip thread waits for its enhancement, which must never wait for a free clip thread
        self.clip_threads = ThreadPoolExecutor(max(self.args.sessions) + 1, thread_name_prefix="clip")
        self.enhance_thread = ThreadPoolExecutor(1, thread_name_prefix="enhance")
        self.streams = "default"
        self.thread_streams = threading.local()
        self.stream_handles: set[int] = set()
        self.streams_lock = threading.Lock()

    def use_streams(self, mode: str) -> None:
        """"default" or "per-thread" for the runs that follow (see --streams)."""
        self.streams = mode

    @contextlib.contextmanager
    def _stream(self):
        """The calling thread's own CUDA stream in per-thread mode, nothing otherwise. torch.cuda.Stream() hands out
        32 pooled streams per priority in turn, and the host copies (avatar.core.host_copy) take theirs from the
        normal-priority pool: the threads' streams come from the high-priority pool, one per thread (at most
        max(--sessions) + 2 threads), checked to be distinct, so no two threads' kernels share a queue."""
        if self.streams != "per-thread" or self.args.smoke:
            yield
            return
        import torch

        stream = getattr(self.thread_streams, "stream", None)
        if stream is None:
            stream = self.thread_streams.stream = torch.cuda.Stream(priority=-1)
            with self.streams_lock:
                if stream.cuda_stream in self.stream_handles:
                    raise RuntimeError("two threads got one CUDA stream from torch's pool: fewer threads, please")
                self.stream_handles.add(stream.cuda_stream)
        stream.wait_stream(torch.cuda.default_stream())  # the prepared portrait state was made there
        with torch.cuda.stream(stream):
            yield

    async def render(self) -> dict:
        """One clip, its enhancement batched with every other clip in flight (ray mode)."""
        loop = asyncio.get_running_loop()

        def enhance(frames: np.ndarray) -> np.ndarray:  # from the clip's thread
            return asyncio.run_coroutine_threadsafe(self._enhance(frames), loop).result()

        def clip() -> int:
            with self._stream():
                return sum(len(enhance(frames)) for frames in self.clip_batches())

        start = time.time()
        frames = await loop.run_in_executor(self.clip_threads, clip)
        return {"frames": frames, "start": start, "end": time.time()}

    async def render_alone(self) -> dict:
        """One clip enhancing its own frames directly, --enhance-batch frames per call (local mode's way)."""
        from batching import joined

        def clip() -> int:
            batches = joined(self.clip_batches(), self.args.enhance_batch)
            return sum(len(out) for b in batches for out in self._enhance_joined([b]))

        start = time.time()
        frames = await asyncio.get_running_loop().run_in_executor(self.clip_threads, clip)
        return {"frames": frames, "start": start, "end": time.time()}

    def take_calls(self) -> list[tuple[int, int]]:
        calls, self.calls = self.calls, []
        return calls

    async def _enhance(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        self.calls.append((len(batches), sum(len(b) for b in batches)))
        return await asyncio.get_running_loop().run_in_executor(self.enhance_thread, self._enhance_joined, batches)

    def _enhance_joined(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Frame batches of several clips -> one stream of --enhance-batch network calls -> the batches' results."""
        from avatar.core.host_copy import host_batches

        frames = np.concatenate(batches)
        size = self.args.enhance_batch
        with self._stream():
            out = np.concatenate(list(host_batches(self.enhance_on_device(frames[i:i + size])
                                                   for i in range(0, len(frames), size))))
        return np.split(out, np.cumsum([len(b) for b in batches])[:-1])


def deployment(args: argparse.Namespace):
    """The replica class as a Serve deployment on one GPU, its enhancement batched with serve.batch."""
    from ray import serve

    cls = type("RenderReplica", (RenderReplica,), {})
    cls._enhance = serve.batch(max_batch_size=args.max_batch_size,
                               batch_wait_timeout_s=args.batch_wait_ms / 1000)(RenderReplica._enhance)
    return serve.deployment(cls, name="render", max_ongoing_requests=max(args.sessions) + 1,
                            ray_actor_options={"num_gpus": 0 if args.smoke else 1, "num_cpus": 1},
                            logging_config={"log_level": "WARNING", "enable_access_log": False})


# ---------------------------------------------------------------- the clients
def sessions_at_once(handle, n: int, clip_s: float, streams: str) -> dict:
    handle.use_streams.remote(streams).result()
    t0 = time.time()
    responses = [handle.render.remote() for _ in range(n)]
    results = [r.result() for r in responses]
    walls = [r["end"] - t0 for r in results]
    frames = sum(r["frames"] for r in results)
    calls = handle.take_calls.remote().result()
    return {"sessions": n, "streams": streams, "frames": frames, "aggregate_fps": round(frames / max(walls), 1),
            "rtf": sorted(round(w / clip_s, 3) for w in walls), "all_real_time": max(walls) <= clip_s,
            "enhance_calls": len(calls), "clips_per_call_max": max((c for c, _ in calls), default=0),
            "frames_per_call_mean": round(float(np.mean([f for _, f in calls])), 1) if calls else 0.0}


def one_at_a_time(handle, clips: int) -> dict:
    t0, frames = time.time(), 0
    for _ in range(clips):
        frames += handle.render_alone.remote().result()["frames"]
    return {"clips": clips, "aggregate_fps": round(frames / (time.time() - t0), 1)}


def main() -> None:
    args = parse_args()
    import ray
    from ray import serve

    here = Path(__file__).resolve().parent  # the replica imports bench_turn_gpu and avatar: Ray's worker processes
    os.environ["PYTHONPATH"] = os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])
    t0 = time.perf_counter()  # inherit this environment from the local instance started here
    ray.init(include_dashboard=False, logging_level="WARNING")
    try:
        serve.start(http_options={"location": "NoServer"})
        handle = serve.run(deployment(args).bind(vars(args)), name=APP, route_prefix=None)
        build_s = time.perf_counter() - t0
        handle.render.remote().result()  # the first requests through the handle set up its routing
        handle.render_alone.remote().result()
        handle.take_calls.remote().result()
        single = one_at_a_time(handle, 3)
        runs = []
        for mode in args.streams:
            for n in args.sessions:
                runs.append(sessions_at_once(handle, n, args.clip_s, mode))
                print(json.dumps({"partial": True, "one_at_a_time": single, "run": runs[-1]}), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    for r in runs:
        r["gain_over_one_at_a_time"] = round(r["aggregate_fps"] / single["aggregate_fps"], 2)
    real_time = {mode: max([r["sessions"] for r in runs if r["streams"] == mode and r["all_real_time"]], default=0)
                 for mode in args.streams}
    device = "cpu (smoke: stand-in networks)" if args.smoke else _gpu_name()
    print(json.dumps({"bench": "serve_gpu", "device": device, "ray": ray.__version__, "clip_s": args.clip_s,
                      "batch": args.batch, "enhance_batch": args.enhance_batch,
                      "max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms,
                      "compile_keypoints": args.compile_keypoints, "build_s": round(build_s, 1),
                      "one_at_a_time": single, "runs": runs,
                      "max_real_time_sessions": max(real_time.values()), "max_real_time_by_streams": real_time}))


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


if __name__ == "__main__":
    main()
