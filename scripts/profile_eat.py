"""Where the EAT generator spends its GPU time.

    python scripts/profile_eat.py --device cuda --dtype bfloat16 --batch 32 [--compile] [--parts]
Kernels: one batch under torch.profiler (compiled when --compile), the top kernels by device time and their split
into convolutions (cuDNN / cuBLAS), fused Triton passes (inductor's and ours) and the rest. --parts: the eager generator's
time per module (CUDA events around every module of the render path; nested modules are included in their
parents), which names the layers the fused kernels came from. Prints tables (stdout) and, last, one JSON line.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eat import (DTYPES, build_networks, find_shared, generator_kp, parse_args, prepare_clip,  # noqa: E402
                       random_clip)
from bench_enhance import kernel_group  # noqa: E402


def kernel_profile(renderer, state, kp, top: int) -> dict:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            renderer.generate(state, kp)
        torch.cuda.synchronize()
    rows = sorted(((e.key, e.count // 2, e.self_device_time_total / 2000) for e in prof.key_averages()
                   if e.self_device_time_total > 0), key=lambda r: -r[2])
    groups: dict[str, float] = defaultdict(float)
    for name, _, ms in rows:
        groups[kernel_group(name)] += ms
    for name, count, ms in rows[:top]:
        print(f"{ms:9.3f} ms {count:4d}x {name[:110]}")
    return {"gpu_ms_per_batch": round(sum(r[2] for r in rows), 2), "kernels_per_batch": sum(r[1] for r in rows),
            "groups_ms": {k: round(v, 2) for k, v in sorted(groups.items())},
            "top": [[n[:90], c, round(ms, 3)] for n, c, ms in rows[:top]]}


def module_parts(gen: torch.nn.Module, call, depth: int) -> dict:
    """ms per module (eager, CUDA events from pre- to post-hook), modules up to `depth` dots deep."""
    events: dict[str, list] = defaultdict(list)
    hooks = []
    for name, mod in gen.named_modules():
        if not name or name.count(".") >= depth:
            continue
        def pre(_m, _i, name=name):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            events[name].append([ev, None])
        def post(_m, _i, _o, name=name):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            events[name][-1][1] = ev
        hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    call()
    torch.cuda.synchronize()
    for h in hooks:
        h.remove()
    parts = {name: round(sum(a.elapsed_time(b) for a, b in evs), 3) for name, evs in events.items()}
    for name, ms in parts.items():
        print(f"{ms:9.3f} ms  {name}")
    return parts


def main() -> int:
    argv = sys.argv[1:]
    parts, top = "--parts" in argv, 40
    args = parse_args([a for a in argv if a != "--parts"])
    from avatar.head.eat.runtime import EatRenderer

    torch.backends.cudnn.benchmark = True
    nets = build_networks(find_shared(args.shared), args.device, DTYPES[args.dtype])
    renderer = EatRenderer(nets, batch_size=args.batch, channels_last=not args.no_channels_last, compile=args.compile,
                           freezing=args.freezing)
    state = prepare_clip(renderer, random_clip(1)[0])
    kp = generator_kp(state, args.batch)
    for _ in range(3):
        renderer.generate(state, kp)
    torch.cuda.synchronize()
    out = {"batch": args.batch, "dtype": args.dtype, "compile": args.compile, "freezing": args.freezing,
           **kernel_profile(renderer, state, kp, top)}
    if parts:
        eager = EatRenderer(nets, batch_size=args.batch, channels_last=not args.no_channels_last)
        eager.generate(state, kp)
        out["eager_parts_ms"] = module_parts(nets.generator, lambda: eager.generate(state, kp), depth=3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
