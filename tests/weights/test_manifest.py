"""avatar/weights/models.toml: every entry is complete and points at real config fields; readiness follows the files."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from avatar.weights import manifest as mf
from avatar.core.config import AvatarConfig
from avatar.weights.doctor import STAGES
from avatar.core.errors import AvatarError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def test_every_entry_has_sources_target_and_licence():
    cfg = AvatarConfig(weights_dir="/w")
    entries = mf.entries()
    assert {e.stage for e in entries} == set(STAGES)
    for e in entries:
        assert e.licence.strip() and e.description.strip(), e.name
        assert e.need in mf.NEEDS and e.kind in ("dir", "file"), e.name
        assert e.files, e.name
        for f in e.files:
            assert f.sources, f"{e.name}/{f.path} has no source"
            assert not Path(f.path).is_absolute() and ".." not in Path(f.path).parts, f.path
            assert f.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f.path
            assert f.sha1 == "" or re.fullmatch(r"[0-9a-f]{40}", f.sha1), f.path
        assert str(mf.target(cfg, e)).startswith("/w/"), e.name


def test_config_fields_named_exist_and_hold_paths():
    cfg = AvatarConfig()
    for e in mf.entries():
        value = mf.config_value(cfg, e.config_field)
        assert isinstance(value, str), e.config_field
        assert value or e.default_path, f"{e.name}: {e.config_field} is empty by default and no default_path"
    with pytest.raises(AvatarError):
        mf.config_value(cfg, "head.no_such_field")


def test_non_commercial_and_registration_licences_need_acceptance():
    assert mf.entry("eat").accept_required and "NC" in mf.entry("eat").licence
    assert mf.entry("chatglm2-6b").accept_required
    assert not mf.entry("gfpgan").accept_required


def test_known_checksums_are_the_reference_ones():
    eat = {f.path: f for f in mf.entry("eat").files}
    assert eat["pad.npy"].sha256 == "4670041f6ea768c7a1a1b0943124bb6c0fd36c5cf34f3b01d9a14112aec4108b"
    assert eat["expPCAnorm_fin/U_mead.npy"].sha256.startswith("9f9ed7bc")
    assert eat["expPCAnorm_fin/mean_mead.npy"].sha256.startswith("123cff32")
    assert mf.entry("deepspeech").files[0].sha1 == "b90017e816572ddce84f5843f1fa21e6a377975e"


def test_chatglm2_tokenizer_entry_matches_the_real_tokenizer_file():
    tok = SHARED / "reference" / "chatglm2_tokenizer.model"
    if not tok.is_file():
        pytest.skip("../shared/reference is not beside the checkout")
    spec = {f.path: f for f in mf.entry("chatglm2-6b").files}["tokenizer.model"]
    data = tok.read_bytes()
    assert spec.size == len(data) and spec.sha256 == hashlib.sha256(data).hexdigest()


def test_eat_entries_cover_what_the_eat_loader_reads():
    from avatar.head.eat.runtime import missing_eat_files

    listed = {f.path for n in ("eat", "deepspeech") for f in mf.entry(n).files if not f.optional}
    needed = {str(p.relative_to("x")) for p in missing_eat_files(Path("x"))}
    assert needed <= listed, needed - listed


def test_target_follows_user_changed_paths(tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path)).replace(**{
        "enhance.gfpgan_path": "/opt/faces/my_gfpgan.pth", "head.eat_dir": "models/EAT", "tts.gpt_sovits_dir": ""})
    assert mf.target(cfg, mf.entry("gfpgan")) == Path("/opt/faces/my_gfpgan.pth")
    assert mf.target(cfg, mf.entry("eat")) == tmp_path / "models/EAT"
    assert mf.target(cfg, mf.entry("gpt-sovits-v2")) == tmp_path / "GPT-SoVITS/GPT_SoVITS/pretrained_models"


def test_missing_files_are_exact_and_sizes_count(tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    missing = mf.missing_files(cfg, "eat")
    assert tmp_path / "eat/pad.npy" in missing and tmp_path / "eat/ckpt/pretrain_new_274.pth.tar" in missing
    assert tmp_path / "eat/demo/M003_template.npy" not in missing  # optional
    for p in missing:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    # pad.npy and the PCA files have known sizes: a 1-byte file is not them
    still = mf.missing_files(cfg, "eat")
    assert sorted(still) == sorted(tmp_path / "eat" / p for p in
                                   ("pad.npy", "expPCAnorm_fin/U_mead.npy", "expPCAnorm_fin/mean_mead.npy"))
    for p in still:
        p.write_bytes(b"\0" * {f.path: f.size for f in mf.entry("eat").files}[str(p.relative_to(tmp_path / "eat"))])
    assert mf.is_ready(cfg, "eat") and not mf.is_ready(cfg, "deepspeech")


def test_stage_ready_needs_required_entries_and_one_of_any(tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    assert not mf.stage_ready(cfg, "asr")
    for p in mf.missing_files(cfg, "funasr-paraformer-en"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("stub")
    assert mf.stage_ready(cfg, "asr")  # one Paraformer is enough; VAD and punctuation are optional


def test_select_by_model_stage_and_all():
    m = mf.default_manifest()
    assert [e.name for e in m.select(["head"])] == ["eat", "deepspeech"]
    assert [e.name for e in m.select(["modnet", "gfpgan"])] == ["gfpgan", "modnet"]  # manifest order
    assert len(m.select(["all"])) == len(m.entries)
    with pytest.raises(AvatarError, match="unknown model"):
        m.select(["nope"])
