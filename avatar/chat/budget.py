"""Replies made for speaking: at most `max_sentences` sentences, and never an unfinished last sentence.

The chat stage streams its reply through a SentenceBudget. The first sentence goes out word by word (the turn's
splitter may start speaking at its first comma, or after a run-on sentence's first words), and so does the second
when the first is short ("I'm Emily."): the splitter may speak the short one alone and must not then wait for the
whole next sentence. After that only whole sentences go out, so a reply cut off by the token limit ends at the
sentence before the cut (unless the cut falls inside that second sentence, whose words already went out), and what
was spoken is exactly the reply kept in the history.
"""
from __future__ import annotations

from avatar.core.text import MIN_CHUNK_UNITS, last_word_end, settled_sentences, speech_units


class SentenceBudget:
    def __init__(self, max_sentences: int = 3) -> None:
        self.max_sentences = max_sentences  # 0: no limit
        self.raw = ""  # everything the model wrote
        self.text = ""  # what went out
        self.full = False  # the budget is spent: the caller stops generating
        self.settled = False  # what went out ends at a sentence end known to be one (the next sentence has begun)

    def feed(self, delta: str) -> str:
        """The part of the reply that may go out now."""
        if self.full:
            return ""
        self.raw += delta
        sentences, rest = settled_sentences(self.raw)
        if self.max_sentences and len(sentences) >= self.max_sentences:
            self.full = True
            return self._release("".join(sentences[: self.max_sentences]), settled=True)
        if len(sentences) == 1 and speech_units(sentences[0]) < MIN_CHUNK_UNITS:
            return self._release(sentences[0] + rest[: last_word_end(rest)], settled=not rest.strip())
        if sentences:
            return self._release("".join(sentences), settled=True)
        # the first sentence is always kept whole, so its words go out as they come: the turn's splitter decides
        # where its first chunk ends (a clause, or a run-on sentence's first words)
        return self._release(rest[: last_word_end(rest)], settled=False)

    def finish(self) -> str:
        """At the end of generation: the rest, unless it is an unfinished sentence after a finished one."""
        if self.full:
            return ""
        sentences, rest = settled_sentences(self.raw, final=True)
        whole = "".join(sentences)
        unfinished = sentences and rest.strip() and len(self.text) <= len(whole)  # none of its words went out yet
        return self._release(whole if unfinished else self.raw)

    def _release(self, keep: str, settled: bool = False) -> str:
        if len(keep) <= len(self.text):
            return ""
        out, self.text, self.settled = keep[len(self.text):], keep, settled
        return out
