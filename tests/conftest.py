"""Shared fixtures: paths to ../shared, real speech fixtures, the astronaut portrait, an artifacts folder."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPEECH = SHARED / "fixtures" / "speech"
ARTIFACTS = ROOT / "test-artifacts"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    return SPEECH / "jfk.flac"


@pytest.fixture(scope="session")
def zh_path() -> Path:
    return SPEECH / "asr_example_zh.wav"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture
def artifacts(request) -> Path:
    """A per-test folder under test-artifacts/ (git-ignored) for screenshots, contact sheets, videos."""
    name = re.sub(r"[^\w.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:80]
    folder = ARTIFACTS / Path(request.node.fspath).stem / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
