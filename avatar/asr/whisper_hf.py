"""Whisper backend "whisper-hf": a Whisper folder in Hugging Face format run by PyTorch (transformers'
WhisperForConditionalGeneration), so speech recognition runs on whatever GPU torch runs on (CTranslate2's CUDA 12
build does not load on a CUDA 13 machine). float16 on CUDA, float32 on the CPU.

The folder: config.json (WhisperConfig), model.safetensors or pytorch_model.bin, tokenizer.json. No preprocessor
file is needed: the log-mel features come from WhisperFeatureExtractor built with config.json's num_mel_bins.

Decoding is a greedy loop of our own over the KV cache, not model.generate(): Whisper's generate() wants a
generation_config.json (lang_to_id, task_to_id, ...) that such a folder may lack and picks the language among all 99;
here one decoder step after <|startoftranscript|> gives both the language (zh or en, the ones the app supports) and
the no-speech probability, the prompt then goes on from that step's cache, and the loop checks the cancel token
between tokens. Every 30 s window is encoded whole (the encoder takes exactly 3000 frames: no short window here).
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.core.cancel import NEVER, CancelToken
from avatar.core.devices import resolve_dtype
from avatar.core.errors import BackendUnavailable, WeightsError
from avatar.core.media import frame_rms_dbfs
from avatar.core.types import Audio

from .base import SAMPLE_RATE, WHISPER_LANGUAGES, to_simplified

log = logging.getLogger(__name__)

NEEDED_FILES = ("config.json", "tokenizer.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first present is loaded
WINDOW_S = 30.0  # Whisper's input window
SEAM_SEARCH_S = 5.0  # longer audio is cut at the quietest 20 ms of each window's last 5 s
SEAM_FRAME = SAMPLE_RATE // 50  # 20 ms
# faster-whisper's defaults: a window is silent when P(<|nospeech|>) > 0.6 and its text's mean log-probability < -1
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0


# ---------------------------------------------------------------- the folder
def missing_files(folder: Path) -> list[str]:
    """Names of the files the folder lacks ([] = complete); the weights count as one, either of WEIGHT_FILES."""
    missing = [name for name in NEEDED_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    return missing


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise WeightsError(f"the Whisper folder {folder} does not exist (set [asr] whisper_hf_dir)")
    missing = missing_files(folder)
    if missing:
        raise WeightsError(f"the Whisper folder {folder} is incomplete: {', '.join(missing)} missing")


def configured_folder(cfg) -> Path:
    """[asr] whisper_hf_dir (relative to weights_dir or absolute) as a complete folder, or WeightsError saying why
    not: the stage's rule, which the doctor reports too (cfg: an AvatarConfig)."""
    if not cfg.asr.whisper_hf_dir:
        raise WeightsError("[asr] whisper_hf_dir is not set (a Whisper folder in Hugging Face format)")
    folder = cfg.weights_path(cfg.asr.whisper_hf_dir)
    check_folder(folder)
    return folder


def weights_file(folder: Path) -> Path:
    return next(folder / name for name in WEIGHT_FILES if (folder / name).is_file())


def read_state(path: Path) -> dict:
    """The tensors of a safetensors or weights-only torch checkpoint, named as WhisperForConditionalGeneration
    names them (a checkpoint of the bare WhisperModel lacks the "model." prefix)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: safetensors and torch raise many kinds
        raise WeightsError(f"{path} cannot be read as weights: {type(e).__name__}: {e}") from None
    if any(key.startswith("model.") for key in state):
        return state
    return {f"model.{key}": value for key, value in state.items()}


def load_weights(model, state: dict, path: Path) -> None:
    """Strict: every tensor of the network comes from the file with its shape, and the file has no other. The output
    projection is the decoder's embedding (tied), so a file may leave it out."""
    expected = model.state_dict()
    tied = {"proj_out.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(state) - tied)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise WeightsError(f"{path} does not match its config.json: missing keys {missing[:8]}, "
                           f"unexpected keys {unexpected[:8]}, wrong shapes {wrong[:8]}")
    model.load_state_dict(state, strict=not tied)


def load_model(folder: Path):
    """WhisperForConditionalGeneration built from config.json on the CPU in float32, weights loaded strictly."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    try:
        config = WhisperConfig.from_json_file(str(folder / "config.json"))
    except (OSError, ValueError) as e:
        raise WeightsError(f"{folder / 'config.json'} is not a Whisper config: {e}") from None
    model = WhisperForConditionalGeneration(config)
    path = weights_file(folder)
    load_weights(model, read_state(path), path)
    return model.eval()


def suppressed_ids(folder: Path, config) -> tuple[list[int], list[int]]:
    """(always, at the first text token) ids the folder's config suppresses; generation_config.json, where present,
    says it for newer folders."""
    found = {"suppress_tokens": config.suppress_tokens, "begin_suppress_tokens": config.begin_suppress_tokens}
    generation = folder / "generation_config.json"
    if generation.is_file():
        saved = json.loads(generation.read_text(encoding="utf-8"))
        found.update({k: saved[k] for k in found if k in saved})
    return list(found["suppress_tokens"] or ()), list(found["begin_suppress_tokens"] or ())


# ---------------------------------------------------------------- tokens
@dataclass(frozen=True)
class SpecialTokens:
    eot: int  # <|endoftext|>: every id above it is a special token (languages, tasks, timestamps)
    sot: int
    transcribe: int
    no_timestamps: int
    no_speech: int | None  # <|nospeech|> (<|nocaptions|> in older tokenizers)
    languages: dict[str, int]  # the app's languages only

    @classmethod
    def of(cls, tokenizer, path: Path) -> "SpecialTokens":
        def token_id(token: str) -> int:
            found = tokenizer.token_to_id(token)
            if found is None:
                raise WeightsError(f"{path} has no {token} token: not a multilingual Whisper tokenizer")
            return found

        no_speech = tokenizer.token_to_id("<|nospeech|>")
        return cls(token_id("<|endoftext|>"), token_id("<|startoftranscript|>"), token_id("<|transcribe|>"),
                   token_id("<|notimestamps|>"),
                   no_speech if no_speech is not None else tokenizer.token_to_id("<|nocaptions|>"),
                   {code: token_id(f"<|{code}|>") for code in WHISPER_LANGUAGES})

    def prompt(self, language: str) -> list[int]:
        return [self.sot, self.languages[language], self.transcribe, self.no_timestamps]


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise WeightsError(f"{path} is not a tokenizer.json: {e}") from None


# ---------------------------------------------------------------- audio
def split_windows(samples: np.ndarray, window_s: float = WINDOW_S) -> list[np.ndarray]:
    """Pieces of at most one window. Each cut falls on the quietest 20 ms of the window's last SEAM_SEARCH_S, so a
    word is cut only where the speaker did not pause for 5 s (the prompt has no timestamps to resume from)."""
    window, search = int(window_s * SAMPLE_RATE), int(min(SEAM_SEARCH_S, window_s / 2) * SAMPLE_RATE)
    pieces, start = [], 0
    while len(samples) - start > window:
        cut = start + window - search + quietest(samples[start + window - search: start + window])
        pieces.append(samples[start:cut])
        start = cut
    pieces.append(samples[start:])
    return pieces


def quietest(part: np.ndarray) -> int:
    """Offset of the middle of the lowest-energy 20 ms frame of part."""
    levels = frame_rms_dbfs(Audio(np.asarray(part, np.float32), SAMPLE_RATE), SEAM_FRAME / SAMPLE_RATE)
    return int(np.argmin(levels)) * SEAM_FRAME + SEAM_FRAME // 2


# ---------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Decoded:
    """One window's greedy decoding."""

    tokens: tuple[int, ...]  # the text tokens: no prompt, no <|endoftext|>
    language: str
    no_speech_prob: float  # P(<|nospeech|>) after <|startoftranscript|>
    avg_logprob: float  # of the tokens and the <|endoftext|> (or the cut), as faster-whisper counts it

    @property
    def silent(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOGPROB_THRESHOLD


def pick_language(logits, languages: dict[str, int]) -> str:
    """The language whose token has the highest logit, among `languages` only."""
    codes = list(languages)
    scores = logits[[languages[code] for code in codes]].tolist()
    return codes[int(np.argmax(scores))]


def _usable_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("ASR: torch sees no CUDA device; Whisper (whisper-hf) runs on the CPU")
        return "cpu"
    return device


class WhisperHfBackend:
    """A Hugging Face Whisper folder on torch; transcribe() and detect_language() as the CTranslate2 backend."""

    name = "whisper-hf"

    def __init__(self, model, tokenizer, tokens: SpecialTokens, folder: Path, max_new_tokens: int) -> None:
        from transformers import WhisperFeatureExtractor

        self.model, self.tokenizer, self.tokens = model, tokenizer, tokens
        param = next(model.parameters())
        self.device, self.dtype = str(param.device), param.dtype
        room = model.config.max_target_positions - len(tokens.prompt(WHISPER_LANGUAGES[0]))
        self.max_new_tokens = max(1, min(int(max_new_tokens), room))
        self._features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, sampling_rate=SAMPLE_RATE)
        self._mask, self._first_mask = self._suppression_masks(*suppressed_ids(folder, model.config))
        self._lock = threading.Lock()  # one decode at a time: the model and its caches are not shared

    @classmethod
    def load(cls, folder: Path, device: str, max_new_tokens: int = 224) -> "WhisperHfBackend":
        """Raises WeightsError for a missing, incomplete or mismatched folder, BackendUnavailable without torch."""
        folder = Path(folder)
        check_folder(folder)
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailable(f"whisper-hf needs torch, transformers and tokenizers ({e})") from None
        tokenizer = load_tokenizer(folder / "tokenizer.json")
        tokens = SpecialTokens.of(tokenizer, folder / "tokenizer.json")
        model = load_model(folder)
        if max(tokens.languages.values()) >= model.config.vocab_size:
            raise WeightsError(f"{folder}: tokenizer.json does not belong to this model (vocab_size "
                               f"{model.config.vocab_size})")
        device = _usable_device(device)
        model.to(device=device, dtype=resolve_dtype("auto", device, gpu_default="float16"))
        log.info("ASR: Whisper (whisper-hf) from %s on %s", folder, device)
        return cls(model, tokenizer, tokens, folder, max_new_tokens)

    def _suppression_masks(self, always: list[int], first: list[int]) -> tuple:
        """Additive float32 logit masks (-inf where suppressed): for every step, and for the first text token. The
        special tokens (every id above <|endoftext|>) never reach the text."""
        import torch

        vocab = self.model.config.vocab_size
        every = torch.zeros(vocab, dtype=torch.float32, device=self.device)
        every[self.tokens.eot + 1:] = float("-inf")
        every[[i for i in always if 0 <= i < vocab]] = float("-inf")
        at_start = every.clone()
        at_start[[i for i in first if 0 <= i < vocab]] = float("-inf")
        return every, at_start

    # -- the interface the stage uses (base.WhisperLike) --

    def detect_language(self, samples: np.ndarray) -> str:
        """'zh' or 'en', whichever the first decoder step finds likelier, on the first window."""
        import torch

        with self._lock, torch.inference_mode():
            logits, _ = self._forward([self.tokens.sot], self.encode(split_windows(samples)[0]), None)
            return pick_language(logits[-1], self.tokens.languages)

    def transcribe(self, samples: np.ndarray, language: str | None, cancel: CancelToken = NEVER) -> tuple[str, str]:
        """(text, language) for 16 kHz float32 samples; language None = detect on the first window (zh / en). cancel
        is checked between tokens (Cancelled)."""
        import torch

        texts = []
        with self._lock, torch.inference_mode():
            for window in split_windows(samples):
                cancel.check()
                decoded = self.decode(self.encode(window), language, cancel=cancel)
                language = decoded.language  # the first window's language holds for the rest
                if not decoded.silent:
                    texts.append(self.text(decoded.tokens))
        text = "".join(texts).strip()
        return (to_simplified(text) if language == "zh" else text), language

    # -- the steps --

    def log_mel(self, window: np.ndarray):
        """Log-mel features (1, num_mel_bins, 3000) of at most 30 s of audio, on the model's device and dtype.

        The frames after the audio are 0, as faster-whisper pads them (the packaged backend), not the log-mel of
        silence that transformers and openai/whisper compute: with the latter, greedy decoding of the real Whisper
        base heard 语音识别 as 云石别 on the zh fixture; with the former it decodes there the very tokens of
        faster-whisper's greedy search (README "whisper-hf")."""
        import torch

        frames = self._features.nb_max_frames
        features = self._features(np.asarray(window, np.float32), sampling_rate=SAMPLE_RATE, padding="longest",
                                  return_tensors="np").input_features[0, :, :frames]
        mel = np.zeros((features.shape[0], frames), np.float32)
        mel[:, : features.shape[1]] = features
        return torch.from_numpy(mel)[None].to(self.device, self.dtype)

    def encode(self, window: np.ndarray):
        """Encoder output (1, 1500, d_model) of at most 30 s of audio."""
        return self.model.model.encoder(self.log_mel(window)).last_hidden_state

    def decode(self, encoded, language: str | None, max_new_tokens: int | None = None,
               cancel: CancelToken = NEVER) -> Decoded:
        """Greedy decoding of one encoded window with the KV cache; language None = the likelier of zh / en."""
        import torch

        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        logits, cache = self._forward([self.tokens.sot], encoded, None)
        first = logits[-1]
        language = language or pick_language(first, self.tokens.languages)
        no_speech = self._no_speech_prob(first)
        logits, cache = self._forward(self.tokens.prompt(language)[1:], encoded, cache)
        tokens, logprob_sum = [], 0.0
        for step in range(limit):
            cancel.check()
            mask = self._first_mask if step == 0 else self._mask
            scores = torch.log_softmax(logits[-1] + mask, dim=-1)
            best, token = (v.item() for v in scores.max(dim=-1))
            logprob_sum += best
            if token == self.tokens.eot:
                break
            tokens.append(token)
            if step + 1 < limit:
                logits, cache = self._forward([token], encoded, cache)
        return Decoded(tuple(tokens), language, no_speech, logprob_sum / (len(tokens) + 1))

    def _forward(self, ids: list[int], encoded, cache):
        """(float32 logits, one row per token fed, cache that now holds them too). cache None = a new one.
        transformers 5 (pinned) calls the KV cache `cache`, in the argument and in the output."""
        import torch

        out = self.model.model.decoder(input_ids=torch.tensor([ids], device=self.device),
                                       encoder_hidden_states=encoded, cache=cache, use_cache=True)
        return self.model.proj_out(out.last_hidden_state[0]).float(), out.cache

    def _no_speech_prob(self, logits) -> float:
        import torch

        if self.tokens.no_speech is None:
            return 0.0
        return torch.softmax(logits, dim=-1)[self.tokens.no_speech].item()

    def text(self, tokens: tuple[int, ...]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)
