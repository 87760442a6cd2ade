#!/usr/bin/env python3
"""A small evaluation of the chat model's sampling settings for spoken replies (issue 20): 20 fixed English
prompts (some two-turn: a name or fact given, then asked), judged by checks a script can make:
  answers   the reply contains the expected word (questions with one right answer)
  remembers the second turn recalls what the first turn said (name, city, sport, pet)
  short     at most chat.max_sentences sentences and 60 words
  ends      the reply ends at a sentence boundary
Each setting is scored on all prompts; one JSON object per setting, then the best one.

    python scripts/eval_chat.py [--settings greedy,t0.3,t0.7] [--backend smollm2]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar.chat import ChatModel  # noqa: E402
from avatar.core.config import AvatarConfig  # noqa: E402
from avatar.core.text import split_sentences  # noqa: E402

# (turns, expected regex in the last reply or None, kind): kind "answers" | "remembers" | "open"
PROMPTS = [
    (["What is the capital of France?"], r"\bparis\b", "answers"),
    (["How many legs does a spider have?"], r"\b(eight|8)\b", "answers"),
    (["What color is the sky on a clear day?"], r"\bblue\b", "answers"),
    (["What do bees make?"], r"\bhoney\b", "answers"),
    (["What is two plus three?"], r"\b(five|5)\b", "answers"),
    (["Which animal says moo?"], r"\bcows?\b", "answers"),
    (["What do we call frozen water?"], r"\bice\b", "answers"),
    (["Which season comes after winter?"], r"\bspring\b", "answers"),
    (["How many days are there in a week?"], r"\b(seven|7)\b", "answers"),
    (["Which planet do we live on?"], r"\bearth\b", "answers"),
    (["What is the opposite of hot?"], r"\bcold\b", "answers"),
    (["My name is Ana.", "What is my name?"], r"\bana\b", "remembers"),
    (["I live in Berlin.", "Which city do I live in?"], r"\bberlin\b", "remembers"),
    (["My dog is called Rex.", "What is my dog's name?"], r"\brex\b", "remembers"),
    (["I love playing football.", "Which sport do I love?"], r"\b(football|soccer)\b", "remembers"),
    (["My favourite colour is green.", "What is my favourite colour?"], r"\bgreen\b", "remembers"),
    (["Hello! How are you today?"], None, "open"),
    (["Tell me a fun fact about the ocean."], None, "open"),
    (["Can you recommend a good book to read?"], None, "open"),
    (["What should I cook for dinner tonight?"], None, "open"),
]
SETTINGS = {
    "greedy": {"chat.temperature": 0.0, "chat.repetition_penalty": 1.1},
    "greedy_rp1.0": {"chat.temperature": 0.0, "chat.repetition_penalty": 1.0},
    "t0.3": {"chat.temperature": 0.3, "chat.top_p": 0.9, "chat.repetition_penalty": 1.1},
    "t0.7": {"chat.temperature": 0.7, "chat.top_p": 0.9, "chat.repetition_penalty": 1.1},
    "greedy_rp1.3": {"chat.temperature": 0.0, "chat.repetition_penalty": 1.3},
    "greedy_tok60": {"chat.temperature": 0.0, "chat.repetition_penalty": 1.1, "chat.max_new_tokens": 60},
}
MAX_WORDS = 60


def judge(reply: str, expected: str | None, max_sentences: int) -> dict:
    sentences = split_sentences(reply, min_units=1)
    return {"correct": None if expected is None else bool(re.search(expected, reply, re.IGNORECASE)),
            "short": len(sentences) <= max_sentences and len(reply.split()) <= MAX_WORDS,
            "ends": bool(reply.strip()) and reply.strip()[-1] in ".!?。！？…\"'”’)"}


def run_setting(name: str, overrides: dict, backend: str) -> dict:
    cfg = AvatarConfig(weights_dir="/nonexistent").replace(**{"chat.backend": backend, **overrides})
    chat = ChatModel.load(cfg)
    rows, t0 = [], time.perf_counter()
    for turns, expected, kind in PROMPTS:
        conv = chat.new_conversation()
        replies = [chat.reply(conv, turn) for turn in turns]
        rows.append({"prompt": turns[-1], "kind": kind, "reply": replies[-1],
                     **judge(replies[-1], expected, cfg.chat.max_sentences)})
    scored = [r for r in rows if r["correct"] is not None]
    result = {"setting": name, **{k.split(".")[1]: v for k, v in overrides.items()}, "backend": chat.backend,
              "answers": sum(r["correct"] for r in scored if r["kind"] == "answers"),
              "answers_of": sum(r["kind"] == "answers" for r in rows),
              "remembers": sum(r["correct"] for r in scored if r["kind"] == "remembers"),
              "remembers_of": sum(r["kind"] == "remembers" for r in rows),
              "short": sum(r["short"] for r in rows), "ends": sum(r["ends"] for r in rows), "of": len(rows),
              "seconds": round(time.perf_counter() - t0, 1)}
    result["score"] = result["answers"] + result["remembers"] + (result["short"] + result["ends"]) / 2
    result["replies"] = rows
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--backend", default="smollm2")
    args = p.parse_args()
    results = []
    for name in args.settings.split(","):
        results.append(run_setting(name, SETTINGS[name], args.backend))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "replies"}), flush=True)
    best = max(results, key=lambda r: r["score"])
    print(json.dumps({"best": best["setting"], "replies": best["replies"]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
