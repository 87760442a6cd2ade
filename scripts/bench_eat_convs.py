#!/usr/bin/env python3
"""Forms of the EAT generator's single most expensive convolution, the dense-motion mask conv (7x7x7, 112 -> 16
channels over the 16x64x64 hourglass volume, with the 7x7 occlusion conv riding along as 16 more outputs), timed
at the generator's batch on one GPU; prints one JSON object. Each form is checked against F.conv3d in float32
(TF32 off) first.

  planar        the form the generator runs (models/eat/blocks.py planar_conv3d): ONE 2-D 7x7 conv over the 16 depth
                planes, the 7 depth taps stacked as outputs (128 = 7*16 + 16); fp16 and bf16 taps
  row_taps      the planar conv's 7 kernel rows stacked as outputs too: a 1x7 conv with 7*128 outputs, then a
                shifted sum over rows (trades products on cuDNN's 7x7 kernel for a 7x bigger intermediate)
  conv3d        the official Conv3d
  max_autotune  the planar conv through torch.compile(mode="max-autotune-no-cudagraphs") (Triton conv templates)

On an H200 (bf16 generator, batch 32) cuDNN ran the planar 7x7 conv on an sm80 kernel: 7.3 of the batch's 70 ms.

    python scripts/bench_eat_convs.py --batch 32 [--forms planar,row_taps,conv3d,max_autotune]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_enhance import timed  # noqa: E402
from models.eat.blocks import conv3d_from_planes, depth_planes, planar_weight  # noqa: E402

CIN, COUT, DEPTH, SIZE, K = 112, 16, 16, 64, 7


def planar(x: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w2, None, padding=K // 2)


def row_taps_weight(w2: torch.Tensor) -> torch.Tensor:
    """(N, Cin, 7, 7) -> (7*N, Cin, 1, 7): kernel row r of every output as output r*N + o."""
    n, cin = w2.shape[:2]
    return w2.permute(2, 0, 1, 3).reshape(K * n, cin, 1, K).contiguous(memory_format=torch.channels_last)


def row_taps(x: torch.Tensor, wr: torch.Tensor) -> torch.Tensor:
    """Same result as planar(): the 1x7 conv per kernel row, then out[y] = sum_r Y_r[y + r - 3] (float32)."""
    y = F.conv2d(x, wr, None, padding=(0, K // 2)).unflatten(1, (K, -1))  # (P, 7, N, H, W)
    h = y.shape[-2]
    out = y[:, K // 2].float()
    for r in range(K):
        s = r - K // 2
        if s > 0:
            out[..., :h - s, :] += y[:, r, :, s:, :]
        elif s < 0:
            out[..., -s:, :] += y[:, r, :, :h + s, :]
    return out


def ms(fn, iters: int) -> float:
    return round(timed(fn, "cuda", 3, iters) * 1e3, 3)


@torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=False)
def check(batch: int = 2) -> dict:
    """Every form against F.conv3d in float32 (TF32 off) on a small batch: max |difference| / max |reference|."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, CIN, DEPTH, SIZE, SIZE, device="cuda", generator=g).contiguous(
        memory_format=torch.channels_last_3d)
    w = torch.randn(COUT, CIN, K, K, K, device="cuda", generator=g) / (CIN * K ** 3) ** 0.5
    ref = F.conv3d(x, w, None, padding=K // 2)
    planes, w2 = depth_planes(x), planar_weight(w.contiguous(memory_format=torch.channels_last_3d))
    tuned = torch.compile(planar, mode="max-autotune-no-cudagraphs", dynamic=False)
    got = {"planar": conv3d_from_planes(planar(planes, w2), batch, K, None),
           "row_taps": conv3d_from_planes(row_taps(planes, row_taps_weight(w2)), batch, K, None),
           "max_autotune": conv3d_from_planes(tuned(planes, w2), batch, K, None)}
    scale = ref.abs().max().item()
    return {name: float(f"{(v - ref).abs().max().item() / scale:.2e}") for name, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32, help="generator frames (planes = batch * 16)")
    ap.add_argument("--forms", default="planar,row_taps,conv3d,max_autotune")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    forms = args.forms.split(",")
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
           "relative_error_fp32": check(), "ms": {}}
    n = K * COUT + COUT  # mask taps + the occlusion conv's per-plane outputs, as the generator runs it
    for dtype in (torch.float16, torch.bfloat16):
        name = str(dtype).split(".")[1]
        x = torch.randn(args.batch * DEPTH, CIN, SIZE, SIZE, device="cuda", dtype=dtype).contiguous(
            memory_format=torch.channels_last)
        w2 = (torch.randn(n, CIN, K, K, device="cuda", dtype=dtype) * 0.01).contiguous(
            memory_format=torch.channels_last)
        if "planar" in forms:
            out["ms"][f"planar_{name}"] = ms(lambda: planar(x, w2), args.iters)
        if "row_taps" in forms:
            wr = row_taps_weight(w2)
            out["ms"][f"row_taps_{name}"] = ms(lambda: row_taps(x, wr), args.iters)
        if "max_autotune" in forms:
            fn = torch.compile(planar, mode="max-autotune-no-cudagraphs", dynamic=False)
            out["ms"][f"max_autotune_{name}"] = ms(lambda: fn(x, w2), args.iters)
        if "conv3d" in forms:
            x3 = torch.randn(args.batch, CIN, DEPTH, SIZE, SIZE, device="cuda", dtype=dtype).contiguous(
                memory_format=torch.channels_last_3d)
            w3 = (torch.randn(COUT, CIN, K, K, K, device="cuda", dtype=dtype) * 0.01).contiguous(
                memory_format=torch.channels_last_3d)
            out["ms"][f"conv3d_{name}"] = ms(lambda: F.conv3d(x3, w3, None, padding=K // 2), args.iters)
        print(json.dumps(out["ms"]), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
