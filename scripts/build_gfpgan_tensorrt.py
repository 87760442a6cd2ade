#!/usr/bin/env python3
"""Build a TensorRT engine for GFPGAN from its ONNX (scripts/export_gfpgan_onnx.py). Needs `tensorrt` and a GPU;
the engine is tied to that GPU model and TensorRT version. The stage uses it automatically when the file exists.

    python scripts/build_gfpgan_tensorrt.py --onnx checkpoints/gfpgan/GFPGANv1.4.onnx \
        --out checkpoints/gfpgan/GFPGANv1.4.engine --fp16 --opt-batch 8 --max-batch 32
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.gfpgan_tensorrt import build_engine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fp16", action="store_true", help="allow fp16 kernels (recommended)")
    ap.add_argument("--opt-batch", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--workspace-gib", type=float, default=8.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        path = build_engine(args.onnx, args.out, fp16=args.fp16, max_batch=args.max_batch, opt_batch=args.opt_batch,
                            workspace_gib=args.workspace_gib)
    except ImportError as e:
        print(json.dumps({"error": str(e)}))
        return 2
    print(json.dumps({"engine": str(path), "fp16": args.fp16, "build_s": round(time.perf_counter() - t0, 1),
                      "size_mb": round(path.stat().st_size / 2**20, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
