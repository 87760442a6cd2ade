"""The GFPGAN benchmark and profiler scripts run end to end (CPU, small networks) and print their JSON reports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _last_json(args: list[str]) -> dict:
    run = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_bench_enhance_smoke_reports_both_networks():
    report = _last_json(["scripts/bench_enhance.py", "--smoke"])
    models = {r["model"].split("-")[0] for r in report["results"]}
    assert models == {"gfpgan", "modnet"}
    assert all((r.get("faces_per_s") or r.get("frames_per_s")) > 0 for r in report["results"])


def test_profile_enhance_cpu_run_accounts_the_batch():
    report = _last_json(["scripts/profile_enhance.py", "--device", "cpu", "--batch", "2", "--size", "64", "--top", "3"])
    assert report["batch"] == 2 and report["size"] == 64
    assert report["kernel_ms"] > 0 and report["groups_ms"]["cpu_ops"] == report["kernel_ms"]


def test_kernel_groups():
    from profile_enhance import kernel_group

    assert kernel_group("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x256x64") == "conv"
    assert kernel_group("triton_poi_fused__to_copy_add_addcmul_leaky_relu_12") == "fused_pointwise"
    assert kernel_group("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>") == "other"
