#!/usr/bin/env python3
"""One-row linear layers of ChatGLM2-6B on the GPU: cuBLAS (F.linear) against the Triton matrix-vector kernel
(fp16 and int8 weights), per weight shape: time, achieved bandwidth (weight bytes / time), error against fp64.
Prints one JSON object.      python scripts/bench_gemv.py [--dtype float16] [--copy-gb 4]"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/ from this checkout

SHAPES = {"qkv": (4608, 4096), "dense": (4096, 4096), "h_to_4h": (27392, 4096), "4h_to_h": (4096, 13696),
          "output": (65024, 4096)}


def median_ms(fn, inputs: list) -> float:
    """Median ms per call, replayed from a CUDA graph that calls fn once per input set (several weight copies:
    no L2 reuse between calls; no Python launch cost, as in graph-replayed decoding)."""
    import triton

    for args in inputs:
        fn(*args)  # pick / compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(4):
            for args in inputs:
                fn(*args)
    return triton.testing.do_bench(graph.replay, warmup=10, rep=100, return_mode="median") / (4 * len(inputs))


def copy_bandwidth(gb: float) -> float:
    import triton

    a = torch.empty(int(gb * 1e9 / 2), dtype=torch.float16, device="cuda").normal_()
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=10, rep=100, return_mode="median")
    return 2 * a.numel() * 2 / ms / 1e9  # read + write, TB/s


def one_shape(n: int, k: int, dtype: torch.dtype, copies: int) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(n + k)
    weights = [torch.randn(n, k, device="cuda", dtype=dtype, generator=gen) / k ** 0.5 for _ in range(copies)]
    x = torch.randn(1, 1, k, device="cuda", dtype=dtype, generator=gen)
    no_bias = weights[0].new_empty(0)
    ref = (x.double().reshape(k) @ weights[0].double().T)
    out = {}
    import models.gemv_triton  # noqa: F401

    for name, fn in (("cublas", lambda w: F.linear(x, w)), ("triton", lambda w: torch.ops.avatar.gemv(x, w, no_bias))):
        ms = median_ms(fn, [(w,) for w in weights])
        err = float((fn(weights[0]).double().reshape(n) - ref).norm() / ref.norm())
        out[name] = {"us": round(ms * 1e3, 2), "tb_s": round(n * k * 2 / ms / 1e9, 3), "rel_err": f"{err:.2e}"}
    scale = torch.rand(n, device="cuda", generator=gen) / 100
    qs = [(torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8, generator=gen), scale)
          for _ in range(copies)]
    ms = median_ms(lambda w, s: torch.ops.avatar.gemv_int8(x, w, s, no_bias), qs)
    out["triton_int8"] = {"us": round(ms * 1e3, 2), "tb_s": round(n * k / ms / 1e9, 3)}
    out["chosen"] = [str(v) for key, v in models.gemv_triton._chosen.items() if key[0] == n and key[1] == k]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--copies", type=int, default=4, help="weight copies rotated through (beats the L2 cache)")
    p.add_argument("--copy-gb", type=float, default=4.0, help="size of the device-to-device copy for the ceiling")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    result = {"bench": "gemv", "device": torch.cuda.get_device_name(), "dtype": args.dtype, "torch": torch.__version__,
              "copy_tb_s": round(copy_bandwidth(args.copy_gb), 3)}
    for name, (n, k) in SHAPES.items():
        result[name] = one_shape(n, k, dtype, args.copies)
        print(name, json.dumps(result[name]), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
