"""Sentence splitting, language detection and mixed-language runs (used by TTS and the streaming chat)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar.core.text import char_error_rate, detect_language, is_speakable, split_by_language, split_sentences, word_error_rate


def test_english_sentences_keep_numbers_and_abbreviations():
    text = "Hello Dr. Smith, how are you? It costs $3.50 today. The U.S. economy grew 2.5% last year! Really?"
    assert split_sentences(text) == ["Hello Dr. Smith, how are you?", "It costs $3.50 today.",
                                     "The U.S. economy grew 2.5% last year! Really?"]  # 1-word tail merged


def test_no_and_the_pronoun_i_end_sentences_but_initials_and_numbers_do_not():
    assert split_sentences("I asked him twice, and he said no. Then he left the room.") == [
        "I asked him twice, and he said no.", "Then he left the room."]
    assert split_sentences("So am I. What about you, my friend?") == ["So am I.", "What about you, my friend?"]
    assert split_sentences("Room No. 5 is free today. J. Kennedy spoke there.") == [
        "Room No. 5 is free today.", "J. Kennedy spoke there."]


def test_chinese_sentences():
    assert split_sentences("今天天气很好！我们去公园散步吧？价格是12.5元。") == [
        "今天天气很好！", "我们去公园散步吧？", "价格是12.5元。"]


def test_short_fragments_are_merged():
    assert split_sentences("好的。我明白你的意思了。") == ["好的。我明白你的意思了。"]
    assert split_sentences("OK. Let me think about it.") == ["OK. Let me think about it."]
    assert split_sentences("I see what you mean. Yes.") == ["I see what you mean. Yes."]
    assert split_sentences("我明白。你说得对。") == ["我明白。", "你说得对。"]


def test_ellipsis_quotes_and_newlines():
    assert split_sentences('He said "wait..." and left.\nThen nothing happened.') == [
        'He said "wait..." and left.', "Then nothing happened."]
    assert split_sentences("“你好！”他说。然后他走了。") == ["“你好！”他说。", "然后他走了。"]


def test_long_sentences_are_cut_at_commas():
    long = "，".join(["这是一个相当长的分句"] * 30) + "。"
    parts = split_sentences(long, max_chars=60)
    assert all(len(p) <= 60 for p in parts) and len(parts) > 3
    assert "".join(parts) == long


def test_empty_and_whitespace():
    assert split_sentences("") == [] and split_sentences("  \n ") == []


def test_detect_language():
    assert detect_language("今天天气很好") == "zh"
    assert detect_language("我喜欢用Python编程") == "zh"
    assert detect_language("I really like 中国 food") == "en"
    assert detect_language("The weather is nice.") == "en"
    assert detect_language("12345", default="zh") == "zh"


def test_split_by_language():
    assert split_by_language("我喜欢用Python编程。") == [("我喜欢用", "zh"), ("Python", "en"), ("编程。", "zh")]
    assert split_by_language("2024年我买了iPhone 15，很好用。") == [
        ("2024年我买了", "zh"), ("iPhone 15，", "en"), ("很好用。", "zh")]
    assert split_by_language("我用Python 3写代码。") == [("我用", "zh"), ("Python", "en"), ("3写代码。", "zh")]
    assert split_by_language("Hello, world!") == [("Hello, world!", "en")]
    assert split_by_language("...") == [] and split_by_language("42", default="zh") == [("42", "zh")]


def test_is_speakable():
    assert is_speakable("a") and is_speakable("你") and is_speakable("7")
    assert not is_speakable("。！？ ...") and not is_speakable("")


def test_error_rates():
    assert word_error_rate("Ask not what your country can do", "ask not what your country can do.") == 0
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)  # one substitution + one deletion
    assert char_error_rate("欢迎大家", "欢迎 大家！") == 0
    assert char_error_rate("欢迎大家", "欢大家们") == pytest.approx(0.5)


_text = st.text(alphabet=st.sampled_from(list("abc XYZ.!?,;。！？，你好世界123…\n\"'")), max_size=120)


@settings(max_examples=200, deadline=None)
@given(_text)
def test_splitting_never_loses_or_reorders_text(text):
    """Every non-space character survives, in order; no piece is empty."""
    parts = split_sentences(text, max_chars=40)
    assert all(p.strip() for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())


@settings(max_examples=200, deadline=None)
@given(_text)
def test_language_runs_keep_every_letter(text):
    runs = split_by_language(text)
    letters = [c for c in text if c.isalpha()]
    assert [c for run, _ in runs for c in run if c.isalpha()] == letters
    for run, lang in runs:
        assert lang in ("zh", "en") and is_speakable(run)
