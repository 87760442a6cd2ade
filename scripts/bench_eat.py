#!/usr/bin/env python3
"""Benchmark the EAT path on random seeded weights (no checkpoint files needed); prints one JSON object.

  generator_fps      generator frames/s at 256x256 for --batch frames per call (source encoding excluded,
                     it runs once per clip)
  clip_rtf           whole EAT path (source latent, prompts, audio2kp + EDN, keypoints, generator, uint8
                     frames on the host) for a 10 s clip (250 frames) from prepared tensors, seconds / 10 s
  peak_mem_*_gb      torch.cuda.max_memory_allocated after the 250-frame clip and after --long-frames frames
                     (constant memory: the two should be about equal)
  clip_parts_s       the same clip again with a synchronisation after each step: prepare (source latent,
                     prompts, source volume), keypoints (audio2kp + EDN for every frame), frames (generator +
                     uint8 frames on the host); where the clip's time goes

Examples:
  python scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile
  python scripts/bench_eat.py --smoke            # tiny CPU run (5 generator frames: ~3 minutes on 2 cores)
Needs only torch + numpy (+ scipy if present, for the keypoint hull volume) and shared/tools/seeded_weights.py,
found via --shared (default <repo>/../shared, else <repo>/shared).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FPS = 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--batch", type=int, default=32, help="generator frames per call")
    ap.add_argument("--a2kp-batch", type=int, default=64, help="frames per audio2kp call")
    ap.add_argument("--iters", type=int, default=10, help="timed generator calls")
    ap.add_argument("--clip-frames", type=int, default=250, help="frames of the RTF clip (10 s at 25 fps)")
    ap.add_argument("--long-frames", type=int, default=15000, help="frames of the constant-memory run (0 = skip)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the generator's per-frame part")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--freezing", action="store_true",
                    help="with --compile: inductor freezing (weights as constants, BatchNorm folded into the convs)")
    ap.add_argument("--compile-keypoints", action="store_true", help="torch.compile audio2kp too")
    ap.add_argument("--autotune", action="store_true", help="inductor's max-autotune for the generator (with --compile)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 (off by default: parity)")
    ap.add_argument("--shared", type=Path, default=None, help="folder with tools/seeded_weights.py")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    a = ap.parse_args(argv)
    if a.smoke:
        a.device, a.dtype, a.batch, a.iters, a.a2kp_batch = "cpu", "float32", 1, 1, 5
        a.clip_frames, a.long_frames, a.compile = 1, 2, False
    return a


def find_shared(flag: Path | None) -> Path:
    for cand in ([flag] if flag else []) + [REPO.parent / "shared", REPO / "shared"]:
        if cand is not None and (cand / "tools" / "seeded_weights.py").is_file():
            return cand
    raise SystemExit("shared/tools/seeded_weights.py not found; pass --shared")


def build_networks(shared: Path, device: str, dtype: torch.dtype):
    return networks_from_parts(seeded_parts(shared), device, dtype)


def seeded_parts(shared: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The seeded EAT state_dicts {part: state_dict} (seed 1234, the parity data's weights)."""
    sys.path.insert(0, str(shared / "tools"))
    from seeded_weights import seeded_state_dict, split_eat

    return split_eat(seeded_state_dict(shared / "reference" / "eat.tsv", 1234))


def networks_from_parts(parts: dict[str, dict[str, torch.Tensor]], device: str, dtype: torch.dtype):
    """EatNetworks from seeded parts, with a random orthonormal expression basis and constant pads."""
    from avatar.head.eat.runtime import build_eat_networks

    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((45, 45)))[0].astype(np.float32)
    mean = (0.05 * rng.standard_normal(45)).astype(np.float32)
    pad_mel = torch.full((80,), -1.5)
    pad_deep = torch.full((16, 29), -6.5)
    return build_eat_networks(parts, u, mean, pad_mel, pad_deep, device=device, dtype=dtype)


def random_clip(n: int, seed: int = 0):
    """Prepared per-frame tensors (CPU) for n frames: source image, head pose, mel, pose images, DeepSpeech."""
    g = torch.Generator().manual_seed(seed)
    bins = torch.arange(66, dtype=torch.float32)
    he = {k: -0.5 * (bins[None, :] - 33 - 2 * torch.randn(n, 1, generator=g)) ** 2 for k in ("yaw", "pitch", "roll")}
    he["t"] = 0.02 * torch.randn(n, 3, generator=g)
    frames = dict(mel=torch.randn(80, n, generator=g), pose=(torch.rand(n, 1, 64, 64, generator=g) > 0.9).float(),
                  deep=-6.5 + 5 * torch.randn(n, 16, 29, generator=g))
    source = torch.rand(1, 3, 256, 256, generator=g)
    return source, he, frames


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generator_kp(state, batch: int) -> torch.Tensor:
    """Driving keypoints for a generator-only timing: the source's, slightly moved."""
    return state.kp_source.expand(batch, -1, -1) + 0.01 * torch.randn(batch, 15, 3, device=state.kp_source.device)


def bench_generator(renderer, state, args) -> dict:
    kp = generator_kp(state, args.batch)
    for _ in range(1 if args.smoke else 3):  # warm-up (cuDNN autotune, compile)
        renderer.generate(state, kp)
    sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        renderer.generate(state, kp)
    sync(args.device)
    dt = time.perf_counter() - t0
    return {"generator_fps": round(args.batch * args.iters / dt, 2), "generator_s_per_batch": round(dt / args.iters, 4)}


def clip_inputs(nets, n: int):
    """(source image, head pose, EatFrameInputs) of a random n-frame clip."""
    from avatar.head.eat.runtime import EatFrameInputs

    source, he, frames = random_clip(n)
    return source, he, EatFrameInputs(pad_mel=nets.pad_mel.cpu(), pad_deep=nets.pad_deep.cpu(), **frames)


def prepare_clip(renderer, source):
    return renderer.prepare(source, 4, torch.randn(1, 16, generator=torch.Generator().manual_seed(1)))


def run_clip(renderer, nets, n: int, args) -> tuple[float, int]:
    """Whole path for an n-frame clip; returns (seconds, frames produced)."""
    source, he, inputs = clip_inputs(nets, n)
    sync(args.device)
    t0 = time.perf_counter()
    state = prepare_clip(renderer, source)
    count = sum(b.shape[0] for b in renderer.render_frames(state, he, inputs))
    sync(args.device)
    return time.perf_counter() - t0, count


def clip_parts(renderer, nets, n: int, args) -> dict:
    """Seconds per step of an n-frame clip, synchronised after each step."""
    from avatar.head.eat.runtime import window_chunk

    source, he, inputs = clip_inputs(nets, n)
    marks = [time.perf_counter()]
    state = prepare_clip(renderer, source)
    sync(args.device)
    marks.append(time.perf_counter())
    kp = renderer.driving_keypoints(state, he, n, lambda a, b: window_chunk(inputs, a, b))
    sync(args.device)
    marks.append(time.perf_counter())
    for _ in renderer.frame_batches(state, kp):
        pass
    sync(args.device)
    marks.append(time.perf_counter())
    return {k: round(b - a, 4) for k, a, b in zip(("prepare", "keypoints", "frames"), marks, marks[1:])}


def peak_gb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 3) if device.startswith("cuda") else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from avatar.head.eat.runtime import EatRenderer

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    if args.smoke:
        torch.set_num_threads(2)
    nets = build_networks(find_shared(args.shared), args.device, DTYPES[args.dtype])
    renderer = EatRenderer(nets, batch_size=args.batch, a2kp_batch=args.a2kp_batch,
                           channels_last=not args.no_channels_last, compile=args.compile,
                           freezing=args.freezing, compile_keypoints=args.compile_keypoints, autotune=args.autotune)
    state = prepare_clip(renderer, random_clip(1)[0])
    out = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "dtype": args.dtype, "batch": args.batch, "compile": args.compile, "freezing": args.compile and args.freezing,
           "compile_keypoints": args.compile_keypoints, "autotune": args.autotune, "a2kp_batch": args.a2kp_batch,
           "channels_last": not args.no_channels_last, "torch": torch.__version__}
    out.update(bench_generator(renderer, state, args))
    if not args.smoke:
        run_clip(renderer, nets, min(args.clip_frames, 2 * args.batch), args)  # warm-up of the other shapes
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    dt, count = run_clip(renderer, nets, args.clip_frames, args)
    out.update(clip_frames=count, clip_s=round(dt, 3), clip_rtf=round(dt / (args.clip_frames / FPS), 4),
               clip_fps=round(count / dt, 2), peak_mem_clip_gb=peak_gb(args.device),
               clip_parts_s=clip_parts(renderer, nets, args.clip_frames, args), tf32_keypoints=renderer.tf32)
    if args.long_frames:
        dt, count = run_clip(renderer, nets, args.long_frames, args)
        out.update(long_frames=count, long_s=round(dt, 2), long_rtf=round(dt / (args.long_frames / FPS), 4),
                   peak_mem_long_gb=peak_gb(args.device))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
