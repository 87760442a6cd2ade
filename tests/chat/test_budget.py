"""Replies made for speaking (issue 20): at most chat.max_sentences sentences, never an unfinished last one, the
first sentence released word by word."""
from __future__ import annotations

import dataclasses

import pytest

from avatar.chat import ChatModel
from avatar.chat.budget import SentenceBudget
from avatar.core.config import AvatarConfig, ChatConfig
from avatar.core.text import split_sentences


def _run(pieces: list[str], max_sentences: int = 3) -> tuple[list[str], SentenceBudget]:
    budget = SentenceBudget(max_sentences)
    out = []
    for piece in pieces:
        out.append(budget.feed(piece))
        if budget.full:
            break
    out.append(budget.finish())
    return [o for o in out if o], budget


def test_the_first_sentence_goes_out_at_its_clauses_later_ones_whole():
    out, budget = _run(["Hello there, my", " friend. It is", " 3.", "14 today, isn't", " it? Bye"])
    assert out == ["Hello there,", " my friend.", " It is 3.14 today, isn't it?"]  # "3." was not a sentence end
    assert budget.text == "Hello there, my friend. It is 3.14 today, isn't it?"  # the cut-off "Bye" is dropped


def test_a_long_first_sentence_goes_out_word_by_word():
    """No comma to wait for: whole words go out as they come (the turn's splitter may cut a run-on first chunk)."""
    out, budget = _run(["I am a won", "derful helper with a bea", "utiful smile! And", " more."])
    assert out == ["I am a", " wonderful helper with a", " beautiful smile!", " And more."]
    assert _run(["你好很高兴认", "识你。"])[0] == ["你好很高兴认", "识你。"]


def test_settled_says_the_text_out_ends_at_a_finished_sentence():
    budget = SentenceBudget(3)
    assert budget.feed("Sorry for your") == "Sorry for" and not budget.settled
    assert budget.feed(" loss.") == " your" and not budget.settled  # "loss." may still be "loss.5"
    assert budget.feed(" I will") == " loss." and budget.settled  # the next sentence has begun
    assert budget.feed(" help. Ok") == " I will help." and budget.settled


def test_generation_stops_after_max_sentences():
    out, budget = _run(["One. Two. ", "Three. Four. Five."], max_sentences=3)
    assert budget.full and budget.text == "One. Two. Three."


def test_chinese_and_a_reply_without_any_sentence_end():
    assert _run(["你好，很高兴", "认识你。今天天气", "很好"])[1].text == "你好，很高兴认识你。"
    assert _run(["Just a fragment with no end"])[1].text == "Just a fragment with no end"  # nothing better to say


def test_abbreviations_do_not_count_as_sentences():
    assert _run(["Dr. Smith and Mr. Jones met. They talked. It was late. Really."])[1].text == \
        "Dr. Smith and Mr. Jones met. They talked. It was late."


@pytest.fixture(scope="module")
def chat_two(tmp_path_factory):
    cfg = AvatarConfig(weights_dir=str(tmp_path_factory.mktemp("none")))
    cfg = dataclasses.replace(cfg, chat=dataclasses.replace(ChatConfig(), max_sentences=2, max_new_tokens=96))
    return ChatModel.load(cfg)


@pytest.mark.parametrize("question", ["Tell me about the ocean and the animals that live in it.",
                                      "What do you like to do on a rainy weekend?"])
def test_the_embedded_model_replies_within_the_budget(chat_two, question):
    conv = chat_two.new_conversation()
    stream = chat_two.stream(conv, question)
    pieces = list(stream)
    reply = stream.text
    sentences = split_sentences(reply, min_units=1)
    print(f"{len(sentences)} sentence(s): {reply!r}")
    assert "".join(pieces).strip() == reply  # what went out is what the history keeps
    assert 1 <= len(sentences) <= 2
    assert reply[-1] in ".!?。！？…\"'”’)" or len(sentences) == 1
    assert conv.recent()[-1] == (question, reply)


def test_after_a_short_first_sentence_the_next_one_goes_out_word_by_word_too():
    """"I'm Emily." may be spoken alone: the words after it must not wait for the whole next sentence."""
    budget = SentenceBudget(3)
    assert budget.feed("I'm Emily.") == "I'm" and budget.feed(" I'm a creative") == " Emily. I'm a"
    assert budget.feed(" writing assistant. How") == " creative writing assistant." and budget.settled
    assert budget.feed(" can I help?") == " How can I help?" and budget.full
    cut, budget = _run(["I'm Emily. I'm a creative writing"])  # generation ends inside the second sentence
    assert "".join(cut) == budget.text == "I'm Emily. I'm a creative writing"  # what went out is what is kept
    long_first = _run(["I am a helper. I am a", " creative writer. Yes."])[0]  # four words: the next goes whole
    assert long_first == ["I am a helper.", " I am a creative writer.", " Yes."]
