"""Cuts a streamed reply into the chunks that are spoken one after another.

The first chunk may end at a clause boundary (，、；：, ; :) once it holds a few words, or after a short whole
sentence ("I'm Emily."), so the avatar starts speaking before the first sentence is finished; later chunks are whole
sentences (avatar.core.text.split_sentences), which sound more natural and give the talking head longer clips, unless
little speech is left to play: then a later chunk too may end at a clause, and when almost none is left it goes
with the words it has (no gap).
"""
from __future__ import annotations

import re
from typing import Callable

from avatar.core.text import MIN_CHUNK_UNITS, is_speakable, speech_units, split_sentences

FULL_WIDTH_CLAUSE_ENDS = "，、；：—"  # always a clause end
ASCII_CLAUSE_ENDS = ",;:"  # a clause end only before a space: "1,000" and "3:30" are not
FIRST_CHUNK_MIN_UNITS = MIN_CHUNK_UNITS  # words / Chinese characters before the first clause may be cut off
FIRST_SENTENCE_MIN_UNITS = 2  # a finished first sentence this long goes alone ("I'm Emily."; "OK." joins the next)
FIRST_CHUNK_MAX_UNITS = 12  # a first clause still without any end after this many is cut at a word boundary


class ChunkSplitter:
    """feed(delta) -> the chunks completed by it; finish() -> the rest. Chunks keep their punctuation."""

    def __init__(self, first_min_units: int = FIRST_CHUNK_MIN_UNITS, clause_first: bool = True,
                 first_max_units: int = FIRST_CHUNK_MAX_UNITS,
                 first_sentence_min_units: int = FIRST_SENTENCE_MIN_UNITS) -> None:
        self.first_min_units = first_min_units
        self.first_max_units = first_max_units
        self.first_sentence_min_units = first_sentence_min_units
        self.clause_first = clause_first
        self.pending = ""
        self.emitted = 0
        # the pipeline's "little speech is left to play": a later chunk may then end at a clause too; and "almost
        # none": it goes with the words it has (no gap)
        self.running_low: Callable[[], bool] = lambda: False
        self.running_dry: Callable[[], bool] = lambda: False

    def feed(self, delta: str, settled: bool = False) -> list[str]:
        """settled: the text fed so far ends at a finished sentence (then sentence_ended() sends it whole)."""
        self.pending += delta
        out: list[str] = []
        if self.emitted == 0 and self.clause_first:
            out += self._first_clause()
        elif self.clause_first and self.running_low():
            out += self._clause() or (self._words_so_far() if self.running_dry() and not settled else [])
        sentences = split_sentences(self.pending)
        if len(sentences) > 1:  # the last piece may still grow: only the completed ones go
            out += sentences[:-1]
            self.pending = self._tail(sentences[-1])
        return self._count(out)

    def finish(self) -> list[str]:
        rest, self.pending = self.pending, ""
        return self._count(split_sentences(rest))

    def sentence_ended(self) -> list[str]:
        """The text fed so far ends at a sentence end its source has confirmed (the chat stage saw the next sentence
        begin; after its first sentence it releases only whole ones): what is pending goes now, as sentences, instead
        of waiting for the next sentence to reach the splitter (the first chunk sooner, no gap before a later one).
        Fewer words than _sentence_min_units() wait to join what follows ("1." of a list, "OK.")."""
        return [] if speech_units(self.pending) < self._sentence_min_units() else self.finish()

    def _sentence_min_units(self) -> int:
        """A whole first sentence may be short ("I'm Emily."): it starts the sound while the model writes on; a
        later one (after a clause or a sentence already playing) needs as many words as a clause."""
        return self.first_sentence_min_units if self.emitted == 0 else self.first_min_units

    def _first_clause(self) -> list[str]:
        return self._clause() or self._first_words()

    def _clause(self) -> list[str]:
        """The pending text up to its first clause end after first_min_units words, or its first sentence end after
        _sentence_min_units() words, if there is one. A sentence end counts as soon as the next sentence has begun
        (split_sentences would wait until that one has a few words, to merge a short "OK." into it)."""
        ends = [(m.end(), self.first_min_units) for m in _CLAUSE_END.finditer(self.pending)]
        sentences = split_sentences(self.pending, min_units=1, max_chars=len(self.pending) + 1)
        if len(sentences) > 1:
            ends.append((self.pending.find(sentences[0]) + len(sentences[0]), self._sentence_min_units()))
        for end, min_units in sorted(ends):
            head = self.pending[:end].strip()
            if speech_units(head) >= min_units:
                self.pending = self.pending[end:]
                return [head]
        return []

    def _words_so_far(self) -> list[str]:
        """The pending text up to its last complete word (the next one has begun), if that is first_min_units words."""
        complete = len(_UNIT.findall(self.pending)) - 1
        return self._cut_after_words(complete) if complete >= self.first_min_units else []

    def _first_words(self) -> list[str]:
        """A run-on first clause (no punctuation yet after first_max_units words) is cut after that many words, once
        the next one has begun: the avatar does not wait for a long sentence's end to start speaking."""
        complete = len(_UNIT.findall(self.pending)) - 1
        return self._cut_after_words(self.first_max_units) if complete >= self.first_max_units else []

    def _cut_after_words(self, n: int) -> list[str]:
        cut = list(_UNIT.finditer(self.pending))[n - 1].end()
        head, self.pending = self.pending[:cut].strip(), self.pending[cut:]
        return [head]

    def _tail(self, last: str) -> str:
        """The still-growing last sentence as it stands in pending, with its spaces ("How " + "are" stays two
        words); split_sentences strips pieces and may re-join a short one with a single space."""
        pos = self.pending.rfind(last)
        return self.pending[pos:] if pos >= 0 else last + self.pending[len(self.pending.rstrip()):]

    def _count(self, chunks: list[str]) -> list[str]:
        chunks = [c for c in chunks if is_speakable(c)]
        self.emitted += len(chunks)
        return chunks


_UNIT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[A-Za-z\u00c0-\u024f]+(?:['’][A-Za-z]+)*|\d+")
# a clause end with something after it: a full-width mark, or an ASCII one followed by white space
_CLAUSE_END = re.compile(f"[{FULL_WIDTH_CLAUSE_ENDS}](?=.)|[{re.escape(ASCII_CLAUSE_ENDS)}](?=\\s)", re.S)
