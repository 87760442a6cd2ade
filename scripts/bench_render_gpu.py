#!/usr/bin/env python3
"""The original design's render path on one GPU (issue 21's capacity figure): EAT keypoints + generator (bf16,
256 px) -> MODNet matte + GFPGAN v1.4 (fp16, 512 px) -> uint8 frames on the host, for --clips clips of --clip-s
seconds rendered one after another, as the app's single GPU queue renders them. Prints one JSON object: the
aggregate frames/s, every clip's wall time / clip length, and how many 25 fps sessions that rate could keep real
time (aggregate / 25) if every frame were batched as well as here. Two ways of bringing the enhanced frames to the
host are timed in turn in one run: `sync` (`.cpu()` after each batch: the GPU waits while the 512 px frames are
copied into pageable memory) and `pipelined` (avatar.core.host_copy, as the app's enhancement stage does: pinned
memory on a side stream while the next batch is queued); a third, `device`, keeps the 256 px frames on the GPU
between EAT and the enhancement (what a render worker holding both on one GPU could do; the app does not yet) and
copies only the results as `pipelined`. Torch only (seeded official-layout weights, the
DeepSpeech port built at its real size), so it runs on a GPU machine without the app's other dependencies.

    python scripts/bench_render_gpu.py --clips 4 --clip-s 10
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import joined  # noqa: E402
from bench_turn_gpu import FPS, Enhance, Head, sync  # noqa: E402

from avatar.core.host_copy import host_batches  # noqa: E402

MODES = ("sync", "pipelined", "device")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--clip-s", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2, help="times every mode is timed (the slowest round is reported)")
    p.add_argument("--batch", type=int, default=32, help="generator frames per call")
    p.add_argument("--enhance-batch", type=int, default=None,
                   help="MODNet + GFPGAN frames per call (default --batch; a multiple of it: generator batches joined)")
    p.add_argument("--freezing", action="store_true", help="inductor's freezing for the EAT generator")
    p.add_argument("--shared", type=Path, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile-keypoints", action="store_true", help="torch.compile EAT's audio2kp too")
    p.add_argument("--modes", default="sync,pipelined", help=f"host copy modes, timed in turn: {', '.join(MODES)}")
    args = p.parse_args()
    args.enhance_batch = args.enhance_batch or args.batch
    if args.enhance_batch % args.batch:
        raise SystemExit("--enhance-batch must be a multiple of --batch")
    args.first_frames, args.clause_s = args.batch, args.clip_s  # the names Head / Enhance read
    return args


def render_clip(head: Head, enhance: Enhance, mode: str) -> int:
    """One clip: every frame's keypoints, then generator batches, each matted, enhanced and copied to the host."""
    with torch.inference_mode():
        kp = head.renderer.driving_keypoints(head.state, head.he, head.n,
                                             lambda a, b: head.window(head.inputs, a, b))
    frames_of = head.renderer.device_frame_batches if mode == "device" else head.renderer.frame_batches
    batches = joined(frames_of(head.state, kp), enhance.batch)
    if mode == "sync":
        return sum(enhance(frames).shape[0] for frames in batches)
    return sum(frames.shape[0] for frames in host_batches(enhance.on_gpu(frames) for frames in batches))


def time_clips(head: Head, enhance: Enhance, mode: str, clips: int, clip_s: float) -> dict:
    start, walls, frames = time.perf_counter(), [], 0
    for _ in range(clips):
        frames += render_clip(head, enhance, mode)
        sync()
        walls.append(time.perf_counter() - start)  # what the k-th user in the queue waits
    fps = frames / walls[-1]
    return {"frames": frames, "aggregate_fps": round(fps, 1), "rtf_in_queue": [round(w / clip_s, 3) for w in walls],
            "real_time_sessions_at_this_rate": round(fps / FPS, 2)}


def main() -> None:
    args = parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown --modes {sorted(unknown)}: use {', '.join(MODES)}")
    t0 = time.perf_counter()
    head = Head(args)
    enhance = Enhance(argparse.Namespace(**vars(args) | {"first_frames": args.enhance_batch}))
    enhance.batch = args.enhance_batch
    for mode in modes:
        render_clip(head, enhance, mode)  # warm-up: compile, cuDNN's choices, pinned buffers
    render_clip(head, enhance, modes[0])
    build_s = time.perf_counter() - t0
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.rounds):  # modes in turn, so that clocks and heat affect both alike
        for mode in modes:
            runs[mode].append(time_clips(head, enhance, mode, args.clips, args.clip_s))
    result = {"bench": "render_gpu", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "networks": {"head": Head.name, "enhance": Enhance.name}, "batch": args.batch,
              "enhance_batch": args.enhance_batch, "freezing": args.freezing, "compile_keypoints": args.compile_keypoints, "clip_s": args.clip_s, "clips": args.clips,
              "rounds": args.rounds, "build_s": round(build_s, 1),
              "not_timed": ["DeepSpeech features (stored windows stand in)", "video encoding (CPU)"]}
    for mode, rounds in runs.items():
        slowest = min(rounds, key=lambda r: r["aggregate_fps"])
        result[mode] = slowest | {"aggregate_fps_rounds": [r["aggregate_fps"] for r in rounds]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
