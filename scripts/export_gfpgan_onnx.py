#!/usr/bin/env python3
"""Export GFPGAN v1.4 to ONNX (opset 17, TorchScript exporter, dynamic batch, noise from the stored buffers).

    python scripts/export_gfpgan_onnx.py --weights checkpoints/gfpgan/GFPGANv1.4.pth \
        --out checkpoints/gfpgan/GFPGANv1.4.onnx --check
    python scripts/export_gfpgan_onnx.py --seeded ../shared/reference/gfpgan_v1.4.tsv --out /tmp/g.onnx --check

--check runs ONNX Runtime (CPU) against torch fp32 on two random faces and prints the PSNR.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatar.enhance.gfpgan import build_gfpgan

from avatar.enhance.gfpgan import load_gfpgan_state  # noqa: E402
from engines.gfpgan_onnx import GFPGANOnnx, export_onnx  # noqa: E402


def seeded_state(manifest: str, seed: int) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(Path(manifest).resolve().parents[1] / "tools"))
    from seeded_weights import seeded_state_dict

    return seeded_state_dict(manifest, seed)


def check(net: torch.nn.Module, path: Path, batch: int = 2) -> dict:
    x = torch.rand(batch, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        ref = net(x).numpy()
    out = GFPGANOnnx(path, "cpu")(x).numpy()
    mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
    return {"psnr_db": 10 * np.log10(4.0 / max(mse, 1e-20)), "max_abs": float(np.abs(out - ref).max())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="official GFPGANv1.4.pth")
    src.add_argument("--seeded", metavar="MANIFEST", help="seeded synthetic weights from a manifest (tests)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    state = load_gfpgan_state(args.weights) if args.weights else seeded_state(args.seeded, args.seed)
    net = build_gfpgan(state)
    t0 = time.perf_counter()
    path = export_onnx(net, args.out, opset=args.opset)
    report = {"onnx": str(path), "opset": args.opset, "export_s": round(time.perf_counter() - t0, 1),
              "size_mb": round(path.stat().st_size / 2**20, 1)}
    if args.check:
        report.update(check(net, path))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
