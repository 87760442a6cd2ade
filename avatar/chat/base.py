"""What the chat stage and its backends share: the request a backend answers and the interface it offers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

from avatar.core.types import GenerationParams


@dataclass(frozen=True)
class ChatRequest:
    """Everything a backend needs for one reply."""
    system: str
    history: tuple[tuple[str, str], ...]  # (user, assistant) rounds, oldest first
    query: str
    params: GenerationParams = field(default_factory=GenerationParams)

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style messages: system, then the rounds, then the query."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.history:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out + [{"role": "user", "content": self.query}]


class ChatBackend(Protocol):
    name: str
    device: str
    languages: frozenset[str]  # languages it can answer in
    follows_tags: bool  # can be asked to start its reply with an [emotion] tag

    def count_tokens(self, request: ChatRequest) -> int: ...

    def count_text_tokens(self, text: str) -> int: ...

    def stream(self, request: ChatRequest) -> Iterator[str]: ...
