"""Where the EAT generator spends its GPU time: one compiled batch under torch.profiler, top kernels by CUDA time.

    python scripts/profile_eat.py --device cuda --dtype bfloat16 --batch 32 [--compile]
Prints a table (stdout) and, last, one JSON line with the top kernels' share of the batch's GPU time.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eat import (DTYPES, build_networks, find_shared, generator_kp, parse_args, prepare_clip,  # noqa: E402
                       random_clip)


def main() -> int:
    args = parse_args(sys.argv[1:])
    from avatar.head.eat.runtime import EatRenderer

    torch.backends.cudnn.benchmark = True
    nets = build_networks(find_shared(args.shared), args.device, DTYPES[args.dtype])
    renderer = EatRenderer(nets, batch_size=args.batch, channels_last=not args.no_channels_last, compile=args.compile)
    state = prepare_clip(renderer, random_clip(1)[0])
    kp = generator_kp(state, args.batch)
    for _ in range(3):
        renderer.generate(state, kp)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            renderer.generate(state, kp)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
    print(table)
    events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events) or 1.0
    top = [{"kernel": e.key[:90], "share": round(e.self_device_time_total / total, 4)} for e in
           sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]]
    print(json.dumps({"batch": args.batch, "dtype": args.dtype, "compile": args.compile,
                      "gpu_ms_per_batch": round(total / 2 / 1000, 2), "top": top}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
