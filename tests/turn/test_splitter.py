"""The chunk splitter: the first chunk may end at a clause once it has a few words; later chunks are sentences."""
from __future__ import annotations

import pytest

from avatar.turn.splitter import ChunkSplitter


def _stream(text: str, splitter: ChunkSplitter | None = None, step: int = 1) -> list[str]:
    """Feeds text in pieces of `step` characters (as a chat model streams it) -> every chunk, in order."""
    splitter = splitter or ChunkSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i:i + step])
    return out + splitter.finish()


def test_english_first_chunk_is_a_clause_then_sentences():
    chunks = _stream("Hello there, my good friend, how are you doing today? I am fine. Thanks for asking me that!")
    assert chunks == ["Hello there, my good friend,", "how are you doing today?", "I am fine.",
                      "Thanks for asking me that!"]


def test_chinese_first_chunk_is_a_clause_then_sentences():
    chunks = _stream("你好，我是你的数字人助手，很高兴认识你。今天天气不错！我们一起聊聊天吧")
    assert chunks == ["你好，我是你的数字人助手，", "很高兴认识你。", "今天天气不错！", "我们一起聊聊天吧"]


@pytest.mark.parametrize("text,first", [
    ("It costs 1,000 dollars, which is a lot. Yes it is.", "It costs 1,000 dollars,"),  # no cut inside a number
    ("Meet me at 3:30 today; bring the map. See you then.", "Meet me at 3:30 today;"),
    ("好的，没问题。我们开始吧。", "好的，没问题。"),  # "好的，" is too short to be the first chunk
    ("首先、其次、最后，我们要做三件事。", "首先、其次、"),
])
def test_the_first_clause_needs_a_few_words_and_a_real_clause_end(text, first):
    assert _stream(text)[0] == first
    assert "".join(_stream(text)).replace(" ", "") == text.replace(" ", "")  # nothing lost or repeated


def test_without_clause_first_every_chunk_is_a_sentence():
    chunks = _stream("Hello there, my good friend, how are you doing today? I am fine.",
                     ChunkSplitter(clause_first=False))
    assert chunks == ["Hello there, my good friend, how are you doing today?", "I am fine."]


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_spaces_between_deltas_survive(step):
    """A sentence still growing keeps its trailing space: "How " + "are" must not become "Howare"."""
    text = "That is a fine question. How are you today? Good."
    assert _stream(text, step=step) == ["That is a fine question.", "How are you today? Good."]


def test_nothing_unspeakable_becomes_a_chunk():
    assert _stream("... !!! ,,, ") == []


def test_a_run_on_first_clause_is_cut_after_a_few_words_at_a_word_boundary():
    text = "the quick brown fox jumps over the lazy dog and then it runs far away into the deep dark wood. Yes."
    chunks = _stream(text, ChunkSplitter(first_max_units=6))
    assert chunks[0] == "the quick brown fox jumps over"  # "over" was complete: " the" had begun
    assert " ".join(chunks) == text
    assert _stream("我们今天一起去公园散步然后吃饭", ChunkSplitter(first_max_units=5))[0] == "我们今天一"


def test_a_later_chunk_ends_at_a_clause_only_while_little_speech_is_left():
    text = "Hello there, my good friend. The Moon is far away, about four hundred thousand kilometres from us. Yes."
    low = ChunkSplitter()
    low.running_low = lambda: True
    assert _stream(text, low)[:3] == ["Hello there, my good friend.", "The Moon is far away,",
                                      "about four hundred thousand kilometres from us."]
    assert _stream(text)[1] == "The Moon is far away, about four hundred thousand kilometres from us. Yes."


def test_the_first_sentence_goes_as_soon_as_the_next_one_begins():
    """split_sentences waits for three words of the next sentence (a short "OK." is merged into it); the first chunk
    does not: it is spoken while the model writes on."""
    splitter = ChunkSplitter()
    assert splitter.feed("I am a wonderful person with a smile! I") == ["I am a wonderful person with a smile!"]
    assert ChunkSplitter().feed("Dr. Smith is here") == []  # an abbreviation is no sentence end


def test_sentences_the_chat_stage_has_settled_go_at_once():
    """The chat stage releases later sentences only whole, so the splitter may never see the next sentence begin:
    when the stage says the text ends at a finished sentence, the pending sentences go without waiting."""
    splitter = ChunkSplitter()
    assert splitter.feed("I am sorry for your loss.") == [] and splitter.sentence_ended() == ["I am sorry for your loss."]
    assert splitter.feed(" I will help you. Tell me a bit more.") == ["I will help you."]
    assert splitter.sentence_ended() == ["Tell me a bit more."] and splitter.finish() == []  # not held back
    assert ChunkSplitter(clause_first=False).sentence_ended() == []
    short = ChunkSplitter()
    assert short.feed("1.") == [] and short.sentence_ended() == []  # too short alone: joins the next sentence
    assert short.feed(" Paris is the capital.") == [] and short.sentence_ended() == ["1. Paris is the capital."]


def test_a_short_whole_first_sentence_is_the_first_chunk():
    """"I'm Emily." is spoken while the model writes its next sentence; a one-word "OK." still joins it, and a
    clause (a comma) still needs first_min_units words."""
    splitter = ChunkSplitter()
    assert splitter.feed("I'm Emily.") == [] and splitter.sentence_ended() == ["I'm Emily."]
    assert _stream("I'm Emily. I am a creative writing assistant here at the studio.")[0] == "I'm Emily."
    assert _stream("OK. I will tell you about the Moon now.")[0] == "OK. I will tell you about the Moon now."
    assert _stream("Yes, the Moon is far away from us, very far.")[0] == "Yes, the Moon is far away from us,"
    later = ChunkSplitter()
    assert later.feed("Hello there, my good friend, ") == ["Hello there, my good friend,"]
    assert later.feed("Thank you.") == [] and later.sentence_ended() == []  # not first: a short sentence waits
    assert ChunkSplitter(first_sentence_min_units=4).feed("I'm Emily. I am") == []


def test_a_later_chunk_goes_with_the_words_it_has_only_when_almost_no_speech_is_left():
    text = "I'm Emily. I am a creative writing assistant here at the studio. Yes."
    dry = ChunkSplitter()
    dry.running_low = dry.running_dry = lambda: True
    assert _stream(text, dry)[:3] == ["I'm Emily.", "I am a creative", "writing assistant here at"]
    low = ChunkSplitter()
    low.running_low = lambda: True  # a clause end would do, but there is none: the sentence goes whole
    assert _stream(text, low)[1] == "I am a creative writing assistant here at the studio."
    assert "".join(_stream(text, dry)).replace(" ", "") == text.replace(" ", "")
    whole = ChunkSplitter()
    whole.running_low = whole.running_dry = lambda: True
    assert whole.feed("Hello there, my friend, ") == ["Hello there, my friend,"]
    assert whole.feed("I am at the Magical Writing Lab.", settled=True) == []  # a finished sentence is not cut
    assert whole.sentence_ended() == ["I am at the Magical Writing Lab."]
