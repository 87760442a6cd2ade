#!/usr/bin/env python3
"""Whisper's short window against its 30 s one, on the same clips: the words each gives and the time each takes.

Clips: the two real recordings of ../shared/fixtures/speech (jfk.flac whole and cut at 4.4 / 6.2 / 8.3 / 10.2 s,
asr_example_zh.wav) and 18 questions (11 English, 7 Chinese) spoken by the app's own TTS at 0.8x and 1.25x speed
with a -40 dB noise floor and 0.3 s of silence around them. Both windows run through one avatar WhisperBackend
(float32, beam 2, language detected) that switches windows, each timed on a second run of the clip. Prints one JSON
line per clip and a summary line (clips whose words agree, ignoring case and punctuation; seconds in all).

    python scripts/eval_asr_window.py --window-s 15
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.asr.base import SAMPLE_RATE  # noqa: E402
from avatar.asr.whisper import WhisperBackend, prepare_whisper_base  # noqa: E402
from avatar.core import media  # noqa: E402
from avatar.core.config import AvatarConfig  # noqa: E402
from avatar.core.paths import SPEECH_FIXTURES  # noqa: E402
from avatar.core.text import normalize_for_scoring  # noqa: E402

QUESTIONS = ("What is the capital of France?", "Tell me one short fact about the Moon.", "What is your name?",
             "Can you recommend a good book for the weekend?", "How far away is the sun from the earth?",
             "I would like to learn how to cook pasta.", "Why is the sky blue during the day?",
             "Please tell me a joke about cats.", "What time does the library open tomorrow morning?",
             "My favourite colour is green, what is yours?",
             "I am planning a trip to Japan next spring, which cities should I visit first?",
             "你好，请介绍一下你自己。", "今天天气怎么样？", "北京是中国的首都吗？", "请给我讲一个简短的故事。", "我想学习怎么做饭。",
             "你最喜欢什么颜色？", "我下个月要去上海出差，你能推荐几家好吃的餐厅吗？")


def clips() -> list[tuple[str, np.ndarray]]:
    from avatar.tts import Tts

    jfk = media.load_audio(SPEECH_FIXTURES / "jfk.flac", SAMPLE_RATE).samples
    out = [(f"jfk_{s}s", jfk[: int(s * SAMPLE_RATE)]) for s in (4.4, 6.2, 8.3, 10.2)] + [("jfk", jfk)]
    out.append(("zh", media.load_audio(SPEECH_FIXTURES / "asr_example_zh.wav", SAMPLE_RATE).samples))
    tts, rng = Tts.load(AvatarConfig()), np.random.default_rng(0)
    pad = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    for i, text in enumerate(QUESTIONS):
        for speed in (0.8, 1.25):
            speech = media.resample(tts.synthesize(text, speed=speed), SAMPLE_RATE).samples
            speech = speech + rng.normal(0, 0.01, speech.shape).astype(np.float32)
            out.append((f"q{i}_{speed}x", np.concatenate([pad, speech, pad])))
    return out


def words(text: str) -> str:
    return normalize_for_scoring(text).replace(" ", "")


def transcribe(backend: WhisperBackend, samples: np.ndarray, window_s: float) -> dict:
    """A second run of the clip in the given window (the first warms the caches), timed."""
    backend.short_window_s = window_s
    backend.transcribe(samples, None)
    t0 = time.perf_counter()
    text, lang = backend.transcribe(samples, None)
    return {"text": text, "language": lang, "s": round(time.perf_counter() - t0, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window-s", type=float, default=15.0)
    args = ap.parse_args()
    backend = WhisperBackend(prepare_whisper_base(), "cpu", "float32", args.window_s)
    agree, seconds = 0, {"full": 0.0, "short": 0.0}
    all_clips = clips()
    for name, samples in all_clips:
        row = {"clip": name, "audio_s": round(len(samples) / SAMPLE_RATE, 2),
               "short_frames": backend.window_frames(len(samples))}
        for tag, window_s in (("full", 30.0), ("short", args.window_s)):
            row[tag] = transcribe(backend, samples, window_s)
            seconds[tag] += row[tag]["s"]
        row["same_words"] = (words(row["full"]["text"]), row["full"]["language"]) == \
            (words(row["short"]["text"]), row["short"]["language"])
        agree += row["same_words"]
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print(json.dumps({"window_s": args.window_s, "clips": len(all_clips), "same_words": agree,
                      "seconds": {k: round(v, 2) for k, v in seconds.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
