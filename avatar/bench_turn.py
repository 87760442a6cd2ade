"""`python -m avatar bench --turns N --json`: the latency of a spoken turn through the pipeline, as JSON.

Recorded questions (real speech: jfk.flac and asr_example_zh.wav from ../shared/fixtures/speech; and questions
spoken by the app's own TTS, with silence around them) are replayed through AvatarSystem.respond, as the Talk tab
and the hands-free mode run it. The clock starts at the end of the user's speech (when the whole recording is
handed over); per turn it records the transcript, the first chat token, the first audio out (a chunk's speech
ready) and the first video out (with media "raw" the first batch of frames, as the hands-free mode streams them;
with "mp4" the first chunk's MP4 written, as the Talk tab's player gets it), the largest gap in the sound (chunks'
speech played back to back) and in the video (with "raw" its frame batches, with "mp4" its whole chunks, played
back to back from the first one's arrival), and the pipeline's real-time factor
(seconds from transcript to the last chunk / seconds of reply speech). p50 and p95 over the turns; a few more
turns are cancelled at their first chunk to measure how long stopping takes (cancel -> every worker ended).
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.core.cancel import CancelToken
from avatar.core.config import AvatarConfig
from avatar.core.paths import SPEECH_FIXTURES
from avatar.core.types import FPS, Audio

SYNTHETIC_QUESTIONS = (("what_is_your_name", "What is your name?"),
                       ("moon_fact", "Tell me one short fact about the Moon."),
                       ("zh_introduce", "你好，请介绍一下你自己。"))
SILENCE_S = 0.3  # before and after a synthetic question, as a recording has
INTERRUPTIONS = 3


@dataclass
class Question:
    name: str
    language: str
    audio: Audio  # 16 kHz mono
    real: bool  # a human recording (else the app's TTS)


def load_questions(system) -> list[Question]:
    """Real recordings first, then TTS-spoken questions (English and Chinese)."""
    from avatar.core import media

    out = []
    jfk = SPEECH_FIXTURES / "jfk.flac"
    if jfk.is_file():  # "And so my fellow Americans, ask not what your country can do for you" (4.4 s)
        audio = media.load_audio(jfk, 16000)
        out.append(Question("jfk_en", "en", Audio(audio.samples[: int(4.4 * 16000)], 16000), True))
    zh = SPEECH_FIXTURES / "asr_example_zh.wav"
    if zh.is_file():
        out.append(Question("example_zh", "zh", media.load_audio(zh, 16000), True))
    for name, text in SYNTHETIC_QUESTIONS:
        speech = media.resample(system.speak(text), 16000)
        pad = np.zeros(int(SILENCE_S * 16000), np.float32)
        samples = np.concatenate([pad, speech.samples, pad])
        out.append(Question(name, "zh" if name.startswith("zh") else "en", Audio(samples, 16000), False))
    return out


def measure_turn(system, question: Question, face, media: str, folder: Path, cancel: CancelToken | None = None
                 ) -> dict:
    """One turn; times in seconds from the end of the user's speech."""
    conv = system.new_conversation()
    marks: dict[str, float] = {}
    chunks: list[tuple[float, float]] = []  # (time out, seconds of speech) per chunk
    audio_out: list[tuple[float, float]] = []
    video_out: list[tuple[float, float]] = []  # (time out, seconds of video): MP4 chunks, or raw frame batches
    done = None
    t_end = time.perf_counter()  # the user's last word: the whole recording is handed over now
    for ev in system.respond(conv, photo=face, audio=question.audio, media=media, chunk_dir=folder,
                             cancel=cancel or CancelToken()):
        t = ev.data["t"] - t_end
        marks.setdefault(ev.kind, t)
        if ev.kind == "audio":
            audio_out.append((t, ev.data["audio"].duration_s))
        elif ev.kind == "frames" and media == "raw":  # the hands-free player shows each batch as it comes
            video_out.append((t, len(ev.data["frames"]) / FPS))
        elif ev.kind == "chunk":
            chunks.append((t, ev.data["audio"].duration_s))
            if media != "raw":  # the Talk tab's player plays a whole MP4
                video_out.append(chunks[-1])
            if cancel is not None:
                cancel.cancel("interrupted")
        elif ev.kind in ("done", "interrupted"):
            done = ev
    return _turn_figures(question, marks, chunks, audio_out, video_out, done, face is not None)


def _turn_figures(question: Question, marks: dict, chunks: list, audio_out: list, video_out: list, done,
                  video: bool) -> dict:
    timings = done.data.get("timings", {}) if done is not None else {}
    speech_s = sum(d for _, d in chunks)
    pipeline_s = marks.get("done", 0.0) - marks.get("transcript", 0.0)
    return {"question": question.name, "asr_s": marks.get("transcript"),
            "first_token_s": _plus(marks.get("mood"), timings.get("first_token_s")),
            "first_audio_s": marks.get("audio"),
            "first_video_s": marks.get("frames", marks.get("chunk")) if video else None,
            "total_s": marks.get("done"), "chunks": len(chunks), "reply_speech_s": round(speech_s, 3),
            "max_gap_s": playback_gap(video_out), "max_audio_gap_s": playback_gap(audio_out),
            "rtf": round(pipeline_s / speech_s, 3) if speech_s else None,
            "stage_busy_s": {k: v for k, v in timings.items() if not k.startswith("first_")},
            "interrupted": done is not None and done.kind == "interrupted",
            "freed_s": done.data.get("freed_s") if done is not None else None}


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def playback_gap(chunks: list[tuple[float, float]]) -> float:
    """The longest silence between chunks played back to back from the first one's arrival: a chunk that arrives
    after the previous one has finished playing leaves a gap."""
    gap, playing_until = 0.0, None
    for arrived, duration in chunks:
        if playing_until is not None:
            gap = max(gap, arrived - playing_until)
        playing_until = max(arrived, playing_until or arrived) + duration
    return round(max(0.0, gap), 4)


def summarise(turns: list[dict]) -> dict:
    """p50 / p95 / max of every latency over the turns."""
    out = {}
    for key in ("asr_s", "first_token_s", "first_audio_s", "first_video_s", "total_s", "max_gap_s",
                "max_audio_gap_s", "rtf"):
        values = [t[key] for t in turns if t.get(key) is not None]
        if values:
            out[key] = {"p50": round(float(np.percentile(values, 50)), 4),
                        "p95": round(float(np.percentile(values, 95)), 4), "max": round(max(values), 4)}
    return out


def stage_names(system) -> dict:
    return {name: {"backend": st.backend, "device": st.device} for name, st in system.status.items()}


def run_turn_bench(cfg: AvatarConfig, turns: int, media_kinds: tuple[str, ...], folder: Path,
                   photo: str | None = None) -> dict:
    from skimage import data

    from .system import AvatarSystem

    t0 = time.perf_counter()
    system = AvatarSystem.load(cfg)
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "device": system.device}, "startup_s": round(time.perf_counter() - t0, 2),
                    "stages": stage_names(system), "size": cfg.head.size,
                    "enhance": system.enhancer is not None, "turn_config": vars(cfg.turn)}
    face = system.prepare_photo(photo or data.astronaut())
    questions = load_questions(system)
    result["questions"] = [{"name": q.name, "language": q.language, "seconds": round(q.audio.duration_s, 2),
                            "real_speech": q.real} for q in questions]
    for q in questions:  # warm-up, not counted: first-use costs (voices, kernels, caches)
        measure_turn(system, q, face, media_kinds[0], folder)
    for media in media_kinds:
        measured = [measure_turn(system, questions[i % len(questions)], face, media, folder) for i in range(turns)]
        stops = [measure_turn(system, questions[i % len(questions)], face, media, folder, CancelToken())
                 for i in range(min(INTERRUPTIONS, turns))]
        result[media] = {"summary": summarise(measured), "turns": measured,
                         "stop_s": [round(t["freed_s"], 4) for t in stops if t["freed_s"] is not None]}
    return result
