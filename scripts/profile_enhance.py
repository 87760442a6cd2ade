"""Where a GFPGAN batch spends its GPU time: the torch engine (fp16, NHWC, baked weights, optionally compiled) under
torch.profiler, its kernels grouped into convolutions (cuDNN), fused pointwise passes (inductor's Triton kernels)
and the rest.

    python scripts/profile_enhance.py --device cuda --batch 64 --compile      # what bench_enhance's compiled figure ran
    python scripts/profile_enhance.py --device cpu --batch 1 --size 128       # a CPU smoke run (small network)
Prints the top kernels (stdout) and, last, one JSON line: ms per batch, faces/s and the time per group.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_enhance import DTYPES, gfpgan_net, kernel_group, kernel_rows, sync  # noqa: E402

from avatar.enhance.gfpgan import TorchRunner  # noqa: E402
from models.gfpgan import V1_4, GFPGANConfig  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=list(DTYPES), help="default: float16 on CUDA, float32 on CPU")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=512, help="face size; below 512 a narrow random network")
    ap.add_argument("--compile", action="store_true", help="torch.compile (default mode), as the app's CUDA engine")
    ap.add_argument("--top", type=int, default=30, help="kernels listed")
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = V1_4 if args.size == 512 else GFPGANConfig(out_size=args.size, narrow=0.25)
    net, weights = gfpgan_net(cfg)
    runner = TorchRunner(net, args.device, DTYPES[args.dtype], args.batch, compile=args.compile)
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    t0 = time.perf_counter()
    runner(x)
    sync(args.device)
    first_s = time.perf_counter() - t0
    for _ in range(3):
        runner(x)
    sync(args.device)
    cuda = args.device.startswith("cuda")
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[activity]) as prof:
        runner(x)
        sync(args.device)
    wall_ms = (time.perf_counter() - t0) * 1000
    rows = kernel_rows(prof, cuda)
    groups: dict[str, float] = defaultdict(float)
    for name, _, ms in rows:
        groups[kernel_group(name) if cuda else "cpu_ops"] += ms
    for name, count, ms in rows[:args.top]:
        print(f"{ms:9.3f} ms {count:5d}x  {name[:140]}")
    total = sum(groups.values())
    print(json.dumps({"device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": args.dtype,
                      "batch": args.batch, "size": args.size, "weights": weights, "compile": args.compile,
                      "first_call_s": round(first_s, 2), "profiled_wall_ms": round(wall_ms, 2),
                      "kernel_ms": round(total, 2), "faces_per_s_from_kernels": round(args.batch / total * 1000, 1),
                      "groups_ms": {k: round(v, 2) for k, v in sorted(groups.items())}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
