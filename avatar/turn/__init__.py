"""The pipelined conversation turn: chat text -> clause/sentence chunks -> speech -> talking-head frames ->
enhancement -> encoded chunk, each stage on its own worker thread with a small bounded queue, all stopped by one
CancelToken (splitter.py, pipeline.py). AvatarSystem.respond builds the stages and runs them here; this package
only sees them as small callables, so it is tested with the real stages and nothing else."""
from __future__ import annotations

from .pipeline import TurnPipeline, TurnStages, TurnResult
from .splitter import ChunkSplitter

__all__ = ["ChunkSplitter", "TurnPipeline", "TurnResult", "TurnStages"]
