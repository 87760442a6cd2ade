#!/usr/bin/env python3
"""Throughput of face enhancement (GFPGAN v1.4, 512x512 faces) and MODNet matting (512x512 frames). Prints JSON.

    python scripts/bench_enhance.py --smoke                                  # CPU sanity check, tiny nets
    python scripts/bench_enhance.py --device cuda --dtype float16 --batch 8,32,64 --engine torch
    python scripts/bench_enhance.py --device cuda --batch 32 --compile max-autotune --what gfpgan
    python scripts/bench_enhance.py --device cuda --batch 64 --what modnet --compile max-autotune
    python scripts/bench_enhance.py --device cuda --engine tensorrt --batch 32   # needs tensorrt

GFPGAN uses the seeded synthetic weights (../shared/tools/seeded_weights.py) when that tool is found, else random
weights: speed does not depend on the values. MODNet: the official ONNX with --modnet-onnx PATH (ONNX Runtime),
else our MODNet-architecture network (models/modnet.py, random weights) in torch, or exported to ONNX with
--engine onnx. `net` numbers time the network alone on device-resident input; `e2e` numbers include the uint8
upload, resize/normalise and the uint8 download (Enhancer.enhance_faces). On CUDA each torch result also carries
`gpu_during_timing` (nvidia-smi: SM clock range, peak power, clock-limit reasons such as sw_power_cap while the
timed loop ran). Progress and per-result lines go to stderr; the last stdout line is the whole report as one JSON
object.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatar.enhance import Enhancer  # noqa: E402
from avatar.enhance.gfpgan import build_gfpgan  # noqa: E402

from avatar.enhance.gfpgan import TorchRunner
from models.gfpgan import V1_4, GFPGANConfig, GFPGANv1Clean  # noqa: E402
from models.modnet import MODNet  # noqa: E402

# the official network's work per face at 512x512 (reference/gfpgan_modnet.md); the tap form of the upsampling
# convs does fewer products, so faces/s times this is an equivalent rate, not the arithmetic the card did
GFPGAN_GFLOP_PER_FACE = 395.5
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def card(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# nvidia-smi's clocks_event_reasons bits (why the SM clock is below its maximum)
CLOCK_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
                 0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
                 0x80: "hw_power_brake_slowdown"}


def summarize_clock_samples(lines: Iterable[str]) -> dict:
    """nvidia-smi rows "clock, power, reasons" (with or without units: "1545 MHz, 686.43 W, 0x...04") -> the SM
    clock range, peak power and the reasons seen; {} when no row parses."""
    clocks, powers, reasons = [], [], 0
    for line in lines:
        parts = [p.strip().split()[0] for p in line.split(",") if p.strip()]
        try:
            clock, power, bits = float(parts[0]), float(parts[1]), int(parts[2], 16)
        except (IndexError, ValueError):
            continue  # a header, "[N/A]", a partial line at the end
        clocks.append(clock)
        powers.append(power)
        reasons |= bits
    if not clocks:
        return {}
    return {"samples": len(clocks), "sm_clock_mhz_min": min(clocks),
            "sm_clock_mhz_median": sorted(clocks)[len(clocks) // 2], "power_w_max": max(powers),
            "clock_reasons": [name for bit, name in CLOCK_REASONS.items() if reasons & bit]}


def smi_gpu_id(index: int) -> str:
    """nvidia-smi's id of torch's cuda:`index`: CUDA_VISIBLE_DEVICES renumbers the cards torch sees (its entries
    are indices or UUIDs, both of which nvidia-smi -i takes); nvidia-smi always counts all of them."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if index < len(visible) else str(index)


class ClockSampler:
    """The GPU's SM clock, power and clock-limit reasons, sampled by nvidia-smi every 100 ms while the timed loop
    runs. Kernel times alone hide it when a card runs at its power limit (GFPGAN batch 64 on an H100: 700 W, SM
    clock down from 1980 to ~1550-1710 MHz, reason sw_power_cap). `summary` stays {} without nvidia-smi or CUDA."""

    QUERY = "clocks.current.sm,power.draw,clocks_event_reasons.active"

    def __init__(self, device: str):
        self.device, self.summary, self._proc = device, {}, None

    def __enter__(self) -> "ClockSampler":
        if self.device.startswith("cuda") and shutil.which("nvidia-smi"):
            index = torch.device(self.device).index
            index = torch.cuda.current_device() if index is None else index
            try:
                self._proc = subprocess.Popen(["nvidia-smi", "-i", smi_gpu_id(index), f"--query-gpu={self.QUERY}",
                                               "--format=csv,noheader", "-lms", "100"],
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self._proc = None
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            out, _ = self._proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        self.summary = summarize_clock_samples(out.splitlines())


def timed(fn, device: str, warmup: int, iters: int) -> float:
    """Seconds per call after warm-up (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


@functools.lru_cache(maxsize=1)
def seeded_state() -> dict[str, torch.Tensor] | None:
    tools = ROOT.parent / "shared" / "tools"
    if not (tools / "seeded_weights.py").is_file():
        return None
    sys.path.insert(0, str(tools))
    from seeded_weights import seeded_state_dict

    return seeded_state_dict(str(tools.parent / "reference" / "gfpgan_v1.4.tsv"), 1234)


def gfpgan_net(cfg: GFPGANConfig) -> tuple[GFPGANv1Clean, str]:
    """A fresh CPU fp32 network (runners move and convert it in place)."""
    if cfg == V1_4 and seeded_state() is not None:
        return build_gfpgan(seeded_state()), "seeded-1234"
    torch.manual_seed(0)
    net = GFPGANv1Clean(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    return net.eval(), "random"


def gfpgan_runner(args, engine: str, net: GFPGANv1Clean, batch: int, size: int, tmp: Path):
    """(callable on a device tensor, description)."""
    dtype = DTYPES[args.dtype]
    if engine == "torch":
        net.use_grouped_conv(args.modconv == "grouped")
        runner = TorchRunner(net, args.device, dtype, batch, compile=False)
        fn = runner.net
        if args.compile != "none":
            fn = torch.compile(runner.net, mode=None if args.compile == "default" else args.compile, dynamic=False)
        return (lambda x: fn(x)), f"torch {args.dtype} channels_last modconv={args.modconv} compile={args.compile}"
    from engines.gfpgan_onnx import GFPGANOnnx, export_onnx

    onnx_path = tmp / f"gfpgan_{size}.onnx"
    if not onnx_path.exists():
        export_onnx(net.float().cpu(), onnx_path, out_size=size)
    if engine == "onnx":
        runner = GFPGANOnnx(onnx_path, args.device)
        return runner, f"onnxruntime {runner.providers[0]} float32"
    from engines.gfpgan_tensorrt import GFPGANTensorRT, build_engine

    engine_path = build_engine(onnx_path, tmp / f"gfpgan_{size}_{batch}.engine", fp16=args.dtype != "float32",
                               max_batch=batch, opt_batch=batch, out_size=size)
    return GFPGANTensorRT(engine_path, args.device), f"tensorrt fp16={args.dtype != 'float32'}"


def bench_gfpgan(args, engine: str, batch: int, cfg: GFPGANConfig, tmp: Path) -> dict:
    net, weights = gfpgan_net(cfg)
    size = cfg.out_size
    fn, desc = gfpgan_runner(args, engine, net, batch, size, tmp)
    in_dtype = DTYPES[args.dtype] if engine == "torch" else torch.float32
    x = (torch.rand(batch, 3, size, size, device=args.device) * 2 - 1).to(in_dtype)
    if engine == "torch":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t0 = time.perf_counter()
        fn(x)
        sync(args.device)
        first_s = time.perf_counter() - t0
        with ClockSampler(args.device) as gpu:
            per_call = timed(lambda: fn(x), args.device, args.warmup, args.iters)
    faces_s = batch / per_call
    result = {"model": "gfpgan-v1.4" if cfg == V1_4 else f"gfpgan-small-{size}", "weights": weights,
              "engine": engine, "detail": desc, "dtype": args.dtype, "batch": batch, "size": size,
              "faces_per_s": round(faces_s, 2), "ms_per_batch": round(per_call * 1e3, 3),
              "first_call_s": round(first_s, 2)}
    if gpu.summary:
        result["gpu_during_timing"] = gpu.summary
    if cfg == V1_4:
        result["nominal_tflops"] = round(faces_s * GFPGAN_GFLOP_PER_FACE / 1e3, 1)
    if engine == "torch" and args.compile == "none" and not args.no_e2e:
        e2e = e2e_gfpgan(args, net, batch, size)
        result["e2e_faces_per_s"] = None if e2e is None else round(e2e, 2)
    return result


def e2e_gfpgan(args, net: GFPGANv1Clean, batch: int, size: int) -> float | None:
    """uint8 faces in numpy -> uint8 faces in numpy through Enhancer.enhance_faces (512 inputs)."""
    if size != 512:  # the small smoke net: skip the 512 contract
        return None
    enhancer = Enhancer.from_network(net, args.device, DTYPES[args.dtype], batch)
    faces = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    return batch / timed(lambda: enhancer.enhance_faces(faces), args.device, 1, max(1, args.iters // 2))


def bench_modnet(args, engine: str, batch: int, size: int, tmp: Path) -> dict:
    if args.modnet_onnx:
        return bench_modnet_onnx(args, Path(args.modnet_onnx), batch, size, "official-onnx")
    torch.manual_seed(0)
    net = MODNet().eval()
    if engine in ("onnx", "tensorrt"):
        path = tmp / "modnet.onnx"
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "output": {0: "b", 2: "h", 3: "w"}})
        return bench_modnet_onnx(args, path, batch, size, "ours-random-onnx")
    dtype = DTYPES[args.dtype]
    reference = copy.deepcopy(net).to(args.device)  # fp32, for the alpha PSNR
    net = net.to(args.device, dtype).to(memory_format=torch.channels_last)  # MODNet: 4-D weights only
    net.pad_concatenations(args.modnet_pad)
    fn = net if args.compile == "none" else torch.compile(net, mode=None if args.compile == "default" else args.compile)
    x32 = torch.rand(batch, 3, size, size, device=args.device) * 2 - 1
    x = x32.to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), ClockSampler(args.device) as gpu:
        per_call = timed(lambda: fn(x), args.device, args.warmup, args.iters)
    result = {"model": "modnet", "weights": "random", "engine": "torch",
              "detail": f"torch {args.dtype} channels_last compile={args.compile} freezing={args.freezing} "
                        f"concatenations padded to x{args.modnet_pad}",
              "dtype": args.dtype, "batch": batch, "size": size, "frames_per_s": round(batch / per_call, 2),
              "ms_per_batch": round(per_call * 1e3, 3), "alpha_psnr_vs_fp32": alpha_psnr(fn, reference, x, x32)}
    if gpu.summary:
        result["gpu_during_timing"] = gpu.summary
    if args.profile:
        result["top_kernels"] = top_kernels(lambda: fn(x), args.device, args.profile)
    return result


def alpha_psnr(fn, reference, x: torch.Tensor, x32: torch.Tensor) -> float:
    """PSNR (dB, peak 1) of the timed network's alpha against the fp32 network's (TF32 off) on the same frames."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            ref = reference(x32[:8]).float()
            got = fn(x)[:8].float()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    mse = torch.mean((got - ref) ** 2).item()
    return round(10 * math.log10(1.0 / max(mse, 1e-20)), 2)


CONV_MARKS = ("fprop", "conv", "cutlass", "xmma", "implicit_gemm", "gemm", "nvjet")  # cuDNN / cuBLAS kernel names
OWN_KERNELS = ("_tap_sums_kernel", "_phase_gather_kernel")  # this project's Triton kernels (models/*_triton.py)


def kernel_group(name: str) -> str:
    """conv (cuDNN convolutions, cuBLAS matrix products), fused_pointwise (inductor's Triton fusions and this
    project's own Triton kernels) or other (copies, grid_sample, memsets ...)."""
    if name.startswith("triton") or name in OWN_KERNELS:
        return "fused_pointwise"
    return "conv" if any(m in name.lower() for m in CONV_MARKS) else "other"


def kernel_rows(prof, cuda: bool) -> list[tuple[str, int, float]]:
    """(name, calls, ms) of every kernel (CUDA) or op (CPU) a torch.profiler run timed, the most time first."""
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = ((e.key, e.count, getattr(e, attr) / 1000) for e in prof.key_averages() if getattr(e, attr) > 0)
    return sorted(rows, key=lambda r: -r[2])


def top_kernels(call, device: str, n: int) -> list:
    """[name, calls, ms] of the n kernels with the most device time in one call (torch.profiler), after a total."""
    cuda = device.startswith("cuda")
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    with torch.inference_mode(), torch.profiler.profile(activities=[activity]) as prof:
        call()
        sync(device)
    rows = kernel_rows(prof, cuda)
    for name, count, ms in rows[:n]:
        log(f"{ms:9.3f} ms {count:4d}x {name[:100]}")
    total = ["total", sum(r[1] for r in rows), round(sum(r[2] for r in rows), 3)]
    return [total] + [[name[:100], count, round(ms, 3)] for name, count, ms in rows[:n]]


def bench_modnet_onnx(args, path: Path, batch: int, size: int, weights: str) -> dict:
    """The real stage code path (avatar.matting.modnet.ModnetMatting) on uint8 frames, pre/post-processing included."""
    from avatar.matting.modnet import ModnetMatting

    matting = ModnetMatting.load(path, batch_size=batch, device=args.device)
    frames = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    per_call = timed(lambda: matting.alpha(frames), "cpu", args.warmup, args.iters)
    return {"model": "modnet", "weights": weights, "engine": "onnx", "detail": f"onnxruntime {matting.providers[0]}",
            "dtype": "float32", "batch": batch, "size": size, "frames_per_s": round(batch / per_call, 2),
            "ms_per_batch": round(per_call * 1e3, 3)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=list(DTYPES), help="default: float16 on CUDA, float32 on CPU")
    ap.add_argument("--batch", default="32", help="comma-separated batch sizes")
    ap.add_argument("--engine", default="torch", help="comma-separated: torch, onnx, tensorrt")
    ap.add_argument("--what", default="both", choices=["gfpgan", "modnet", "both"])
    ap.add_argument("--compile", default="none",
                    choices=["none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--modconv", default="batched", choices=["batched", "grouped"],
                    help="grouped = the official per-sample grouped conv, for comparison")
    ap.add_argument("--modnet-onnx", default="", help="the official MODNet ONNX (else our architecture)")
    ap.add_argument("--freezing", action="store_true",
                    help="inductor freezing with --compile: weights become constants, BatchNorm folds into the convs")
    ap.add_argument("--profile", type=int, default=0, help="MODNet: list the N kernels with the most GPU time")
    ap.add_argument("--modnet-pad", type=int, default=8,
                    help="MODNet: pad the 35/99-channel concatenations to a multiple of this (1 = as the checkpoint)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-e2e", action="store_true", help="skip the uint8 end-to-end GFPGAN measurement")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run: small nets, batch 1, 1 iteration")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.batch, args.iters, args.warmup = "cpu", "1", 1, 1
    args.dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    return args


def main() -> int:
    args = parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    if args.freezing:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    gfp_cfg = GFPGANConfig(out_size=128, narrow=0.25) if args.smoke else V1_4
    modnet_size = 128 if args.smoke else 512
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-enhance-") as tmp:
        for engine in args.engine.split(","):
            for batch in (int(b) for b in args.batch.split(",")):
                for what in (("gfpgan", "modnet") if args.what == "both" else (args.what,)):
                    log(f"{what} engine={engine} batch={batch} ...")
                    try:
                        r = bench_gfpgan(args, engine, batch, gfp_cfg, Path(tmp)) if what == "gfpgan" else \
                            bench_modnet(args, engine, batch, modnet_size, Path(tmp))
                    except Exception as e:  # e.g. no tensorrt, out of memory, a compiler error: report, go on
                        r = {"model": what, "engine": engine, "batch": batch, "error": f"{type(e).__name__}: {e}"}
                        if args.device.startswith("cuda"):
                            torch.cuda.empty_cache()
                    log(json.dumps(r))
                    results.append(r)
    print(json.dumps({"card": card(args.device), "torch": torch.__version__, "smoke": args.smoke,
                      "goals": {"gfpgan_faces_per_s": 1000, "modnet_frames_per_s": 1500}, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
