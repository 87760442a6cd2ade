"""FunASR Paraformer backend: Chinese / English Paraformer models from local folders, fully offline.

Each folder holds config.yaml + model.pt (+ tokens.json, am.mvn, seg_dict, ...), as published on the model hubs:
  zh: speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch (SeACo: hotwords)
  en: speech_paraformer-large-vad-punc_asr_nat-en-16k-common-vocab10020
  optional VAD (fsmn-vad) and punctuation (ct-punc) folders, shared by both languages.
An absolute, existing folder path makes FunASR skip hub resolution; disable_update=True skips its version check.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.errors import BackendError, BackendUnavailable, WeightsError

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.yaml", "model.pt")
BATCH_SIZE_S = 300  # seconds of speech per VAD batch (FunASR's documented default)


def is_model_folder(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def find_folders(cfg: AvatarConfig) -> tuple[dict[str, Path], str | None]:
    """({"zh": dir, "en": dir} for the folders present, None) or ({}, why none is usable)."""
    wanted = {"zh": cfg.weights_path(cfg.asr.funasr_zh), "en": cfg.weights_path(cfg.asr.funasr_en)}
    found = {lang: p.resolve() for lang, p in wanted.items() if is_model_folder(p)}
    if found:
        return found, None
    where = ", ".join(str(p) for p in wanted.values())
    return {}, f"no Paraformer folder found (need config.yaml + model.pt in: {where})"


def _offline_env() -> None:
    """Belt and braces: no hub call can happen with local paths, but a hub client must never try one."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MODELSCOPE_OFFLINE"):
        os.environ.setdefault(name, "1")


def _torch_threads() -> int:
    """FunASR calls torch.set_num_threads(ncpu) (default 4) for the whole process: pass the current value."""
    import torch

    return torch.get_num_threads()


def _funasr_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device


@dataclass
class _Model:
    auto_model: object  # funasr.AutoModel
    folder: Path
    seaco: bool  # accepts hotwords


class FunAsrBackend:
    """One funasr.AutoModel per language folder; transcribe(samples, lang) picks the right one."""

    def __init__(self, models: dict[str, _Model], device: str) -> None:
        self._models, self.device = models, device
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._models)

    def folder(self, lang: str) -> Path:
        return self._models[lang].folder

    @classmethod
    def load(cls, cfg: AvatarConfig, folders: dict[str, Path], device: str) -> "FunAsrBackend":
        _offline_env()
        try:
            from funasr import AutoModel
        except ImportError as e:
            raise BackendUnavailable(f"funasr is not installed ({e})") from None
        extras = _optional_models(cfg)
        models = {}
        for lang, folder in folders.items():
            log.info("ASR: loading Paraformer %s from %s", lang, folder)
            try:
                auto = AutoModel(model=str(folder), disable_update=True, device=_funasr_device(device),
                                 disable_pbar=True, log_level="WARNING", check_latest=False,
                                 ncpu=_torch_threads(), **extras)
            except Exception as e:  # FunASR raises bare asserts / KeyErrors on a bad folder
                raise BackendUnavailable(f"cannot load the Paraformer folder {folder}: {type(e).__name__}: {e}") from e
            check_weights(auto.model, folder / "model.pt")
            models[lang] = _Model(auto, folder, "seaco" in type(auto.model).__name__.lower())
        return cls(models, device)

    def transcribe(self, samples: np.ndarray, lang: str, hotwords: str = "") -> str:
        """Text for 16 kHz float32 mono samples, with the model of `lang`."""
        model = self._models[lang]
        kwargs = {"hotword": hotwords} if hotwords and model.seaco else {}
        try:
            with self._lock:
                results = model.auto_model.generate(input=np.ascontiguousarray(samples, np.float32),
                                                    batch_size_s=BATCH_SIZE_S, disable_pbar=True, **kwargs)
        except Exception as e:
            raise BackendError(f"FunASR failed on this recording: {type(e).__name__}: {e}") from e
        texts = [r.get("text", "") for r in results or [] if isinstance(r, dict)]
        return _join_texts(texts, lang)


def _optional_models(cfg: AvatarConfig) -> dict[str, str]:
    """vad_model / punc_model arguments for the optional folders that exist."""
    extras = {}
    for key, rel in (("vad_model", cfg.asr.funasr_vad), ("punc_model", cfg.asr.funasr_punc)):
        path = cfg.weights_path(rel) if rel else None
        if path is not None and is_model_folder(path):
            extras[key] = str(path.resolve())
        elif rel:
            log.info("ASR: optional FunASR %s not found at %s; continuing without it", key, path)
    return extras


_CJK_GAP = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])\s+(?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")


def _join_texts(texts: list[str], lang: str) -> str:
    """One string; SeACo / BiCif models space every Chinese character ("欢 迎"): those spaces go."""
    sep = " " if lang == "en" else ""
    joined = sep.join(t.strip() for t in texts if t and t.strip())
    return _CJK_GAP.sub("", joined)


def _load_plain(checkpoint: Path) -> dict:
    import torch

    try:
        return torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{checkpoint} cannot be read as a weights-only checkpoint: {e}") from None


def check_weights(model, checkpoint: Path) -> None:
    """FunASR loads checkpoints leniently (a missing or mis-shaped tensor stays random); we insist each one loads."""
    import torch

    try:  # memory-mapped: only names and shapes are compared, the tensors (already loaded by FunASR) are not read
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        state = _load_plain(checkpoint)
    except Exception as e:
        raise WeightsError(f"{checkpoint} cannot be read as a weights-only checkpoint: {e}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or wrong:
        raise WeightsError(f"{checkpoint} does not match its config.yaml: missing keys {missing[:8]}, "
                           f"wrong shapes {wrong[:8]}, unexpected keys {unexpected[:8]}")
    if unexpected:  # extra tensors (e.g. training-only heads) do not change the network: say so, keep going
        log.warning("ASR: %s has %d keys the network does not use: %s", checkpoint, len(unexpected), unexpected[:8])
