#!/usr/bin/env python3
"""Official-architecture timing mode: the authors' network code timed next to ours in one process (same device,
dtype, batch, torch.compile flag, channels_last where the official code allows it); prints one JSON object with
both rates and the speed-up per network (official time / ours, > 1: ours faster). The official code view()s activations in ways that fail on
channels_last tensors: GFPGAN runs NCHW, the EAT generator NHWC only from the warp on (the 2-D convs there and
the SPADE decoder); `layout` in each result says so.

    bash scripts/stage_official.sh                   # official files -> .gpu_shared/official/{eat,gfpgan,modnet}
    python scripts/bench_official.py --official-eat .gpu_shared/official/eat --device cuda --compile
    python scripts/bench_official.py --official-gfpgan .gpu_shared/official/gfpgan \\
        --official-modnet .gpu_shared/official/modnet --device cuda --compile
    python scripts/bench_official.py --official-eat D1 --official-gfpgan D2 --official-modnet D3 --smoke   # CPU

Each --official-* DIR is a plain copy of the needed files of the official repository (stage_official.sh); it is
put on sys.path here, never vendored. Only the networks whose DIR is given run:
  eat     EAT generator, 256 px (yuangan/EAT_code modules/generator.py OcclusionAwareSPADEGeneratorEam built from
          config/deepprompt_eam3d_st_tanh_304_3090_all.yaml), seeded weights loaded strictly into both. Ours renders
          a batch from a source volume encoded once (EatRenderer.generate). The official forward cannot be split:
          `forward` times it with the source repeated for the batch (the demo's per-frame call, batched; it
          re-encodes the source every frame); `tail` times the official modules on the lines of that forward after
          the source encoding (the same work as ours). Both are reported, `ratio` of each = that call's time / ours.
  gfpgan  GFPGAN v1.4, 512 px (TencentARC/GFPGAN gfpganv1_clean_arch.py), seeded weights, strict;
          official call m(x, return_rgb=False, randomize_noise=False)[0].
  modnet  MODNet, 512 px (ZHKKKe/MODNet src/models/modnet.py, backbone_pretrained=False), random weights shared
          by both (strict load of ours into the official module); official call m(x, True)[2] (the matte). Ours
          runs with pad_concatenations(8), its GPU form.
Per network: frames (faces) per second of each side after warm-up, ms per batch, and max / mean |ours - official|
on one batch in the timed dtype (the same function was timed; reduced precision makes these larger than fp32).
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_eat import (find_shared, generator_kp, networks_from_parts, prepare_clip, random_clip,  # noqa: E402
                       seeded_parts)
from bench_enhance import DTYPES, timed  # noqa: E402

from avatar.enhance.gfpgan import TorchRunner, build_gfpgan  # noqa: E402
from avatar.head.eat.runtime import EatRenderer  # noqa: E402
from models.modnet import MODNet  # noqa: E402

NETWORKS = ("eat", "gfpgan", "modnet")
CUDA_DTYPE = {"eat": "bfloat16", "gfpgan": "float16", "modnet": "float16"}  # what the app runs on a GPU
BATCH = {"eat": 32, "gfpgan": 64, "modnet": 64}
UNIT = {"eat": "frames/s", "gfpgan": "faces/s", "modnet": "frames/s"}
EAT_CONFIG = Path("config/deepprompt_eam3d_st_tanh_304_3090_all.yaml")
# GFPGANv1.4 = shared/reference/gfpgan_v1.4.tsv's constructor arguments
GFPGAN_V1_4 = dict(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                   num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in NETWORKS:
        ap.add_argument(f"--official-{name}", type=Path, metavar="DIR", help=f"copy of the official {name} code")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="all networks (default on CUDA: EAT bfloat16, GFPGAN and "
                                                            "MODNet float16; float32 on CPU)")
    ap.add_argument("--batch", type=int, help="all networks (default EAT 32, GFPGAN 64, MODNet 64)")
    ap.add_argument("--compile", action="store_true", help="torch.compile (default mode) both sides")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per side")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per side after the first (compile, cuDNN)")
    ap.add_argument("--eat-official", choices=("both", "tail", "forward"), default="both",
                    help="which official EAT call(s) to time (see above)")
    ap.add_argument("--shared", type=Path, help="folder with tools/seeded_weights.py and reference/")
    ap.add_argument("--smoke", action="store_true", help="CPU, float32, batch 1, one timed call: checks the script")
    a = ap.parse_args(argv)
    dirs = {name: getattr(a, f"official_{name}") for name in NETWORKS}
    a.official = {name: d for name, d in dirs.items() if d is not None}
    if not a.official:
        ap.error("give at least one of --official-eat / --official-gfpgan / --official-modnet")
    for name, d in a.official.items():
        if not d.is_dir():
            ap.error(f"--official-{name} {d}: no such folder (bash scripts/stage_official.sh copies the official code)")
    if a.smoke:
        a.device, a.dtype, a.batch, a.iters, a.warmup, a.compile = "cpu", "float32", 1, 1, 0, False
    return a


def network_dtype(args, name: str) -> str:
    return args.dtype or (CUDA_DTYPE[name] if args.device.startswith("cuda") else "float32")


def maybe_compile(fn: Callable, args) -> Callable:
    return torch.compile(fn, dynamic=False) if args.compile else fn


# ----------------------------------------------------------------------------------------------- official code
def import_official(folder: Path) -> None:
    """The official files import by their repository-relative names (modules.util, gfpgan.archs, src.models)."""
    if str(folder.resolve()) not in sys.path:
        sys.path.insert(0, str(folder.resolve()))


def stub_module(name: str, **attrs) -> None:
    """A stand-in module for an import the official file makes but the timed path never uses."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)


def stub_if_missing(name: str, **attrs) -> None:
    if find_spec(name) is None:
        stub_module(name, **attrs)


def stub_basicsr() -> None:
    """GFPGAN's clean archs import basicsr's ARCH_REGISTRY (a class decorator) and default_init_weights (random
    init, overwritten by the strict load); basicsr itself is not needed (nor installable with recent torchvision)."""
    stub_module("basicsr.utils.registry", ARCH_REGISTRY=types.SimpleNamespace(register=lambda *a, **k: lambda c: c))
    stub_module("basicsr.archs.arch_util", default_init_weights=lambda *a, **k: None)


def commit_of(folder: Path) -> str | None:
    """stage_official.sh writes '<owner>+<repo> <commit>' to COMMIT."""
    f = folder / "COMMIT"
    return f.read_text().strip() if f.is_file() else None


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class Side:
    call: str  # what is timed, in words
    fn: Callable[[], torch.Tensor]  # one batch -> the image output


def compare(ours: Side, official: dict[str, Side], batch: int, args) -> dict:
    """The first call of each side (compiles; its output is the difference check), then the timed calls."""
    with torch.inference_mode():
        ref = ours.fn().float().clone()
        ours_s = timed(ours.fn, args.device, args.warmup, args.iters)
        out = {"ours": {"call": ours.call, "per_s": round(batch / ours_s, 2), "ms_per_batch": round(ours_s * 1e3, 3)},
               "official": {}}
        for name, side in official.items():
            diff = (side.fn().float() - ref).abs()
            dt = timed(side.fn, args.device, args.warmup, args.iters)
            out["official"][name] = {"call": side.call, "per_s": round(batch / dt, 2),
                                     "ms_per_batch": round(dt * 1e3, 3), "ratio": round(dt / ours_s, 3),
                                     "max_abs_diff": float(f"{diff.max().item():.3g}"),
                                     "mean_abs_diff": float(f"{diff.mean().item():.3g}")}
            del diff
    return out


# ----------------------------------------------------------------------------------------------- networks
def official_eat_generator(folder: Path, state: dict[str, torch.Tensor]) -> nn.Module:
    """OcclusionAwareSPADEGeneratorEam(**generator_params, **common_params) of the deepprompt config, strict."""
    import yaml

    stub_if_missing("munch", Munch=dict)  # modules/audioencoder.py imports both, unused by the generator
    stub_if_missing("cv2", dct=None)
    import_official(folder)
    from modules.generator import OcclusionAwareSPADEGeneratorEam

    cfg = yaml.safe_load((folder / EAT_CONFIG).read_text())["model_params"]
    net = OcclusionAwareSPADEGeneratorEam(**cfg["generator_params"], **cfg["common_params"])
    net.load_state_dict(state, strict=True)
    return net.eval()


def channels_last_after_warp(gen: nn.Module) -> nn.Module:
    """NHWC weights (spectral norm's weight_orig included) for the official 2-D convs after the warp (third,
    fourth, the SPADE decoder: most of the work), the layout ours use; earlier the official code view()s
    activations in ways that need NCHW / NCDHW-contiguous tensors, so those modules keep that layout."""
    for module in (gen.third, gen.fourth, gen.decoder):
        for p in module.parameters():
            if p.ndim == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return gen


def official_eat_tail(gen: nn.Module, feature_3d: torch.Tensor, kp_driving: dict, kp_source: dict) -> torch.Tensor:
    """The official OcclusionAwareSPADEGeneratorEam.forward from `dense_motion = ...` on, on its own modules: the
    per-frame part once the (emotion-modulated) source volume exists. Its occlusion-map resize is skipped: the map
    is 64x64 like the features, so the official code never runs it."""
    dense_motion = gen.dense_motion_network(feature=feature_3d, kp_driving=kp_driving, kp_source=kp_source)
    out = gen.deform_input(feature_3d, dense_motion["deformation"])
    bs, c, d, h, w = out.shape
    out = gen.fourth(gen.third(out.view(bs, c * d, h, w)))
    out, _ = gen.decoder(out * dense_motion["occlusion_map"])
    return out


def bench_eat(folder: Path, args) -> dict:
    dtype, batch = DTYPES[network_dtype(args, "eat")], args.batch or BATCH["eat"]
    parts = seeded_parts(find_shared(args.shared))
    renderer = EatRenderer(networks_from_parts(parts, args.device, dtype), batch_size=batch, channels_last=True,
                           compile=args.compile)
    source = random_clip(1)[0]
    state = prepare_clip(renderer, source)
    kp = generator_kp(state, batch)
    ours = Side("EatRenderer.generate: OcclusionAwareSPADEGeneratorEam.render(source volume encoded once, "
                "kp_source (1,15,3), kp_driving (B,15,3))", lambda: renderer.generate(state, kp)["prediction"])
    gen = channels_last_after_warp(official_eat_generator(folder, parts["generator"]).to(args.device, dtype))

    def dev(t: torch.Tensor) -> torch.Tensor:  # the official module's inputs: its dtype, batch B
        return t.to(args.device, dtype).expand(batch, *t.shape[1:]).contiguous()

    src = dev(source)
    kp_s, kp_d, prompt = {"value": dev(state.kp_source)}, {"value": dev(kp)}, dev(state.emoprompt)
    forward = maybe_compile(gen, args)
    official = {"forward": Side("official generator(source repeated B times, kp_driving={'value': (B,15,3)}, "
                                "kp_source={'value': (B,15,3)}, prompt=(B,128))['prediction']",
                                lambda: forward(src, kp_driving=kp_d, kp_source=kp_s, prompt=prompt)["prediction"])}
    if args.eat_official != "forward":
        with torch.inference_mode():
            feature_3d = gen(src, kp_driving=kp_d, kp_source=kp_s, prompt=prompt)["feature_3d"].clone()
        tail = maybe_compile(official_eat_tail, args)
        official["tail"] = Side("official forward after the source encoding, on its modules (dense_motion_network, "
                                "deform_input, third, fourth, occlusion, decoder), source volume (B,32,16,64,64) "
                                "given", lambda: tail(gen, feature_3d, kp_d, kp_s))
        if args.eat_official == "tail":
            del official["forward"]
    return {"network": "eat-generator", "size": 256, "dtype": str(dtype).split(".")[1], "batch": batch,
            "layout": "ours channels_last; official channels_last from the warp on (third, fourth, decoder), "
                      "NCHW / NCDHW before: its view()s there (generator.py feature_3d = out.view(bs, reshape_channel, "
                      "reshape_depth, h, w), dense_motion.py prediction.view(bs, -1, h, w)) fail on channels_last",
            "weights": "seeded-1234, strict", **compare(ours, official, batch, args)}


def bench_gfpgan(folder: Path, args) -> dict:
    dtype, batch = DTYPES[network_dtype(args, "gfpgan")], args.batch or BATCH["gfpgan"]
    shared = find_shared(args.shared)
    sys.path.insert(0, str(shared / "tools"))
    from seeded_weights import seeded_state_dict

    state = seeded_state_dict(shared / "reference" / "gfpgan_v1.4.tsv", 1234)
    stub_basicsr()
    import_official(folder)
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    official_net = GFPGANv1Clean(**GFPGAN_V1_4)
    official_net.load_state_dict(state, strict=True)
    official_fn = maybe_compile(official_net.eval().to(args.device, dtype), args)
    ours_net = maybe_compile(TorchRunner(build_gfpgan(state), args.device, dtype, batch).net, args)
    x = (torch.rand(batch, 3, 512, 512, device=args.device) * 2 - 1).to(dtype)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    ours = Side("models.gfpgan.GFPGANv1Clean (baked) (x NHWC)", lambda: ours_net(x_nhwc))
    official = {"forward": Side("official GFPGANv1Clean(x NCHW, return_rgb=False, randomize_noise=False)[0]",
                                lambda: official_fn(x, return_rgb=False, randomize_noise=False)[0])}
    return {"network": "gfpgan-v1.4", "size": 512, "dtype": str(dtype).split(".")[1], "batch": batch,
            "layout": "ours channels_last; official NCHW: its feat.view(b, -1) before final_linear and the "
                      "modulated conv's x.view(1, b * c, h, w) fail on channels_last tensors",
            "weights": "seeded-1234, strict", **compare(ours, official, batch, args)}


def bench_modnet(folder: Path, args) -> dict:
    dtype, batch = DTYPES[network_dtype(args, "modnet")], args.batch or BATCH["modnet"]
    import_official(folder)
    from src.models.modnet import MODNet as OfficialMODNet

    torch.manual_seed(0)
    ours_net = MODNet().eval()
    official_net = OfficialMODNet(backbone_pretrained=False).eval()
    official_net.load_state_dict(ours_net.state_dict(), strict=True)  # ours follow the official names
    ours_net = ours_net.to(args.device, dtype).to(memory_format=torch.channels_last).pad_concatenations(8)
    official_net = official_net.to(args.device, dtype).to(memory_format=torch.channels_last)
    ours_fn, official_fn = maybe_compile(ours_net, args), maybe_compile(official_net, args)
    x = (torch.rand(batch, 3, 512, 512, device=args.device) * 2 - 1).to(dtype).contiguous(
        memory_format=torch.channels_last)
    ours = Side("models.modnet.MODNet.pad_concatenations(8) (x)", lambda: ours_fn(x))
    official = {"forward": Side("official MODNet(x, True)[2] (the matte)", lambda: official_fn(x, True)[2])}
    return {"network": "modnet", "size": 512, "dtype": str(dtype).split(".")[1], "batch": batch,
            "layout": "channels_last both", "weights": "random (seed 0), ours loaded into the official module, strict",
            **compare(ours, official, batch, args)}


BENCHES = {"eat": bench_eat, "gfpgan": bench_gfpgan, "modnet": bench_modnet}


def run(name: str, folder: Path, args) -> dict:
    """One network's report; an error (out of memory, a compiler failure) is reported and the others still run."""
    try:
        result = BENCHES[name](folder, args)
    except Exception as e:  # noqa: BLE001 - reported in the JSON, exit status 1
        result = {"network": name, "error": f"{type(e).__name__}: {e}"}
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(json.dumps(result), file=sys.stderr, flush=True)
    return {"unit": UNIT[name], "official_dir": str(folder), "official_commit": commit_of(folder), **result}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 on both sides
    torch.backends.cudnn.benchmark = True
    if args.smoke:
        torch.set_num_threads(2)
    results = [run(name, folder, args) for name, folder in args.official.items()]
    card = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
    print(json.dumps({"device": card, "torch": torch.__version__, "compile": args.compile,
                      "iters": args.iters, "warmup": args.warmup, "smoke": args.smoke, "results": results}))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
