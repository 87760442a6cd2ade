"""Stand-in for GPT_SoVITS/TTS_infer_pack/TTS.py: the same classes and calls, a predictable tone instead of a voice."""
from __future__ import annotations

import os
import re

import numpy as np
import yaml

SECONDS_PER_CHAR = 0.06


class TTS_Config:
    def __init__(self, configs_path: str) -> None:
        with open(configs_path, encoding="utf-8") as f:
            custom = yaml.safe_load(f)["custom"]
        self.configs_path = configs_path
        self.version = custom["version"]
        self.sampling_rate = int(custom["sampling_rate"])
        self.languages = list(custom["languages"])
        self.t2s_weights_path = ""
        self.vits_weights_path = ""


def tone(text: str, sample_rate: int) -> np.ndarray:
    """int16 audio: SECONDS_PER_CHAR per speakable character, pitch from the text."""
    n_chars = max(3, len(re.findall(r"\w", text)))
    t = np.arange(int(n_chars * SECONDS_PER_CHAR * sample_rate)) / sample_rate
    freq_hz = 200.0 + sum(map(ord, text)) % 300
    return (0.5 * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


class TTS:
    def __init__(self, configs: TTS_Config) -> None:
        self.configs = configs
        self.weight_switches: list[tuple[str, str]] = []

    def init_t2s_weights(self, weights_path: str) -> None:
        if not os.path.exists(weights_path):
            raise FileNotFoundError(weights_path)
        self.configs.t2s_weights_path = weights_path
        self.weight_switches.append(("gpt", weights_path))

    def init_vits_weights(self, weights_path: str) -> None:
        if not os.path.exists(weights_path):
            raise FileNotFoundError(weights_path)
        self.configs.vits_weights_path = weights_path
        self.weight_switches.append(("sovits", weights_path))

    def run(self, inputs: dict):
        """Yields (sample_rate, int16 audio): one item, or one per fragment with return_fragment."""
        for key in ("text", "text_lang", "ref_audio_path", "prompt_lang"):
            if not inputs.get(key):
                raise ValueError(f"{key} is required")
        if not os.path.exists(inputs["ref_audio_path"]):
            raise FileNotFoundError(inputs["ref_audio_path"])
        if inputs["text_lang"].lower() not in self.configs.languages:
            raise ValueError(f"text_lang {inputs['text_lang']} is not supported")
        rate = self.configs.sampling_rate
        if inputs.get("return_fragment") or inputs.get("streaming_mode"):
            for fragment in filter(None, re.split(r"(?<=[，。,.!?！？])", inputs["text"])):
                yield rate, tone(fragment, rate)
        else:
            yield rate, tone(inputs["text"], rate)
