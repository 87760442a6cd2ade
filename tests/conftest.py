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
def jfk_path(shared_dir) -> Path:  # the speech fixtures live in ../shared: skipped, not errors, without it
    return SPEECH / "jfk.flac"


@pytest.fixture(scope="session")
def zh_path(shared_dir) -> Path:
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


@pytest.fixture(scope="session")
def system(tmp_path_factory):
    """The whole AvatarSystem with its embedded default backends, loaded once for the app/CLI/system tests."""
    from avatar.core.config import AvatarConfig
    from avatar.system import AvatarSystem

    out = tmp_path_factory.mktemp("outputs")
    cfg = AvatarConfig(weights_dir=str(tmp_path_factory.mktemp("no-weights")), output_dir=str(out), device="cpu")
    cfg = cfg.replace(**{"chat.temperature": 0.0,  # greedy: replies are repeatable, so assertions are stable
                         "limits.uploads_per_10min": 100000})  # the tests upload far more than a person would
    return AvatarSystem.load(cfg)


@pytest.fixture(scope="session")
def app_url(system):
    """The real Gradio app served on a free 127.0.0.1 port (shared by the gradio_client and browser tests)."""
    yield from served_app(system)


def served_app(system):
    """Serves the app for `system` on a free 127.0.0.1 port; yields its URL, closes it afterwards."""
    import socket

    import app as app_module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app_module.launch(system, host="127.0.0.1", port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory, jfk_path) -> Path:
    """The first 4.4 s of jfk.flac ("And so my fellow Americans, ask not...") as a 16 kHz wav."""
    from avatar.core import media
    from avatar.core.types import Audio

    a = media.load_audio(jfk_path, 16000)
    return media.save_wav(Audio(a.samples[: int(4.4 * 16000)], 16000), tmp_path_factory.mktemp("speech") / "q.wav")


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory, astronaut) -> Path:
    from avatar.core import media

    return media.save_png(astronaut, tmp_path_factory.mktemp("photo") / "astronaut.png")


@pytest.fixture(scope="session")
def gfpgan_weights(tmp_path_factory, shared_dir) -> Path:
    """A weights folder holding only GFPGAN v1.4, with the shared seeded weights where the config looks for the
    official file (the other stages use their embedded defaults)."""
    import sys

    import torch

    sys.path.insert(0, str(shared_dir / "tools"))
    from seeded_weights import seeded_state_dict

    weights = tmp_path_factory.mktemp("gfpgan-weights")
    (weights / "gfpgan").mkdir()
    state = seeded_state_dict(str(shared_dir / "reference" / "gfpgan_v1.4.tsv"), 1234)
    torch.save({"params_ema": state}, weights / "gfpgan" / "GFPGANv1.4.pth")
    return weights
