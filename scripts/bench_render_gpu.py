#!/usr/bin/env python3
"""The original design's render path on one GPU (issue 21's capacity figure): EAT keypoints + generator (bf16,
256 px) -> MODNet matte + GFPGAN v1.4 (fp16, 512 px) -> uint8 frames on the host, for --clips clips of --clip-s
seconds rendered one after another, as the app's single GPU queue renders them. Prints one JSON object: the
aggregate frames/s, every clip's wall time / clip length, and how many 25 fps sessions that rate could keep real
time (aggregate / 25) if every frame were batched as well as here. Torch only (seeded official-layout weights, the
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
from bench_turn_gpu import FPS, Enhance, Head, sync  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--clip-s", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=32, help="generator and enhancement frames per call")
    p.add_argument("--shared", type=Path, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile-keypoints", action="store_true", help="torch.compile EAT's audio2kp too")
    args = p.parse_args()
    args.first_frames, args.clause_s = args.batch, args.clip_s  # the names Head / Enhance read
    return args


@torch.inference_mode()
def render_clip(head: Head, enhance: Enhance) -> int:
    """One clip: every frame's keypoints, then generator batches, each matted, enhanced and copied to the host."""
    kp = head.renderer.driving_keypoints(head.state, head.he, head.n, lambda a, b: head.window(head.inputs, a, b))
    return sum(enhance(frames).shape[0] for frames in head.renderer.frame_batches(head.state, kp))


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    head, enhance = Head(args), Enhance(args)
    for _ in range(2):
        render_clip(head, enhance)  # warm-up: compile, cuDNN's choices
    build_s = time.perf_counter() - t0
    start, walls, frames = time.perf_counter(), [], 0
    for _ in range(args.clips):
        frames += render_clip(head, enhance)
        sync()
        walls.append(time.perf_counter() - start)  # what the k-th user in the queue waits
    fps = frames / walls[-1]
    print(json.dumps({"bench": "render_gpu", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "networks": {"head": Head.name, "enhance": Enhance.name}, "batch": args.batch,
                      "compile_keypoints": args.compile_keypoints, "clip_s": args.clip_s, "clips": args.clips, "frames": frames, "build_s": round(build_s, 1),
                      "aggregate_fps": round(fps, 1), "rtf_in_queue": [round(w / args.clip_s, 3) for w in walls],
                      "real_time_sessions_at_this_rate": round(fps / FPS, 2),
                      "not_timed": ["DeepSpeech features (stored windows stand in)", "video encoding (CPU)"]}))


if __name__ == "__main__":
    main()
