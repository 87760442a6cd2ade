from pathlib import Path

import pytest

from avatar.config import AvatarConfig, VoiceConfig
from avatar.errors import AvatarError


def test_defaults_are_embedded_backends():
    cfg = AvatarConfig()
    assert cfg.weights_dir == "checkpoints" and cfg.asr.backend == "auto" and cfg.head.size == 256
    assert cfg.weights_path("eat") == Path("checkpoints/eat")
    assert cfg.weights_path("/abs/x") == Path("/abs/x")


def test_toml_overrides_sections(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text('weights_dir = "/w"\ndevice = "cpu"\n[chat]\nbackend = "openai"\nmax_rounds = 3\n'
                 '[[tts.voices]]\nname = "alice"\nref_audio = "a.wav"\n')
    cfg = AvatarConfig.load(p)
    assert cfg.weights_dir == "/w" and cfg.chat.backend == "openai" and cfg.chat.max_rounds == 3
    assert cfg.tts.voices == (VoiceConfig(name="alice", ref_audio="a.wav"),)
    assert cfg.asr.backend == "auto"  # untouched sections keep defaults


def test_unknown_keys_and_bad_files_are_clear(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text("[chat]\nbakend = 'x'\n")
    with pytest.raises(AvatarError, match="bakend"):
        AvatarConfig.load(p)
    p.write_text("not = [valid")
    with pytest.raises(AvatarError, match="not valid TOML"):
        AvatarConfig.load(p)
    with pytest.raises(AvatarError, match="not found"):
        AvatarConfig.load(tmp_path / "missing.toml")


def test_replace_dotted():
    cfg = AvatarConfig().replace(**{"head.backend": "lite", "device": "cpu"})
    assert cfg.head.backend == "lite" and cfg.device == "cpu" and cfg.head.size == 256
