"""Where the project's own files are: assets beside the package, the cache of unpacked models, the shared fixtures."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = PROJECT_ROOT / "assets"
SPEECH_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures" / "speech"  # benchmarks' default clips


def default_cache_dir() -> Path:
    """Models unpacked once from installed packages (Whisper base, SmolLM2): ~/.cache/avatar or AVATAR_CACHE_DIR."""
    return Path(os.environ.get("AVATAR_CACHE_DIR", Path.home() / ".cache" / "avatar")).expanduser()
