from pathlib import Path

import pytest

from avatar.core.config import AvatarConfig, VoiceConfig
from avatar.core.errors import AvatarError


def test_defaults_are_embedded_backends():
    cfg = AvatarConfig()
    assert cfg.weights_dir == "checkpoints" and cfg.asr.backend == "auto" and cfg.head.size == 512
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
    assert cfg.head.backend == "lite" and cfg.device == "cpu" and cfg.head.size == 512


@pytest.mark.parametrize("toml,message", [
    ('[head]\nsize = "512"\n', "[head] size must be an integer, not '512'"),
    ('[server]\nport = "8080"\n', "[server] port must be an integer, not '8080'"),
    ('[limits]\nmax_audio_s = "60"\n', "[limits] max_audio_s must be a number, not '60'"),
    ('[head]\ncompile = 1\n', "[head] compile must be true or false, not 1"),
    ('[head]\nbatch_size = true\n', "[head] batch_size must be an integer, not True"),
    ('weights_dir = 5\n', "weights_dir must be a string, not 5"),
    ('head = 5\n', "'head' must be a table of settings ([head] section), not 5"),
    ('chat = "openai"\n', "'chat' must be a table of settings ([chat] section), not 'openai'"),
    ('[tts.voices]\nname = "alice"\n', "'tts.voices' must be a list of tables (write [[tts.voices]] for each entry"),
    ('[tts]\nvoices = ["alice"]\n', "'tts.voices' must be a list of tables"),
    ('[[tts.voices]]\nname = 5\n', "[tts.voices] name must be a string, not 5"),
])
def test_values_of_the_wrong_type_are_named(tmp_path, toml, message):
    assert message in _load_error(tmp_path, toml)


def _load_error(tmp_path, toml: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(toml)
    with pytest.raises(AvatarError) as err:
        AvatarConfig.load(p)
    return str(err.value)


def test_an_int_is_taken_where_a_float_is_expected(tmp_path):
    p = tmp_path / "f.toml"
    p.write_text("[limits]\nmax_audio_s = 30\n[chat]\ntemperature = 0\n")
    cfg = AvatarConfig.load(p)
    assert cfg.limits.max_audio_s == 30.0 and isinstance(cfg.limits.max_audio_s, float)
    assert cfg.chat.temperature == 0.0 and isinstance(cfg.chat.temperature, float)
    assert AvatarConfig().replace(weights_dir=tmp_path).weights_dir == str(tmp_path)  # a Path from Python code


@pytest.mark.parametrize("toml,message", [
    ('[asr]\nbackend = "wisper"\n', "[asr] backend = 'wisper' is not one of: 'auto', 'whisper', 'whisper-hf', 'funasr'"),
    ('[chat]\nbackend = "chatgpt"\n', "[chat] backend = 'chatgpt' is not one of: 'auto', 'smollm2', 'chatglm2'"),
    ('[tts]\ngpt_sovits_mode = "grpc"\n', "[tts] gpt_sovits_mode = 'grpc' is not one of: 'http', 'inprocess'"),
    ('[head]\nsize = 384\n', "[head] size = 384 is not one of: 256, 512"),
    ('[head]\ndtype = "fp16"\n', "[head] dtype = 'fp16' is not one of: 'auto', 'float32', 'float16', 'bfloat16'"),
    ('[matting]\nbackend = "rembg"\n', "[matting] backend = 'rembg' is not one of"),
    ('[enhance]\nengine = "trt"\n', "[enhance] engine = 'trt' is not one of: 'auto', 'torch', 'onnx', 'tensorrt'"),
    ('[chat]\nquantize = "int4"\n', "[chat] quantize = 'int4' is not one of: '', 'int8', '8bit', '4bit'"),
    ('device = "gpu"\n', "device 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
])
def test_misspelled_choices_are_rejected_when_the_config_is_built(tmp_path, toml, message):
    import tomllib

    assert message in _load_error(tmp_path, toml)
    section, values = next(iter(tomllib.loads(toml).items()))
    dotted = {section: values} if not isinstance(values, dict) else {f"{section}.{k}": v for k, v in values.items()}
    with pytest.raises(AvatarError, match="is not"):  # the same rule for changes made from code / CLI flags
        AvatarConfig().replace(**dotted)


def test_choices_are_normalised_as_the_stages_did():
    """Case and spaces never mattered to the stages for these: "EN", "BFloat16", " CUDA " and an empty device."""
    cfg = AvatarConfig().replace(**{"asr.language": "EN", "head.dtype": "BFloat16", "asr.backend": " Whisper "})
    assert (cfg.asr.language, cfg.head.dtype, cfg.asr.backend) == ("en", "bfloat16", "whisper")
    assert AvatarConfig().replace(device="").device == "auto"
    assert AvatarConfig().replace(device=" CUDA ").device == "cuda"


def test_every_listed_choice_and_device_name_is_accepted():
    from avatar.core.config import CHOICES

    for key, allowed in CHOICES.items():
        for value in allowed:
            assert AvatarConfig().replace(**{key: value})
    for device in ("auto", "cpu", "cuda", "cuda:1", "CUDA:0"):
        assert AvatarConfig().replace(device=device).device == device.lower()
