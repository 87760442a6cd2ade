"""The talking-head stage (`load_head`): a portrait photo + speech + emotion + head pose -> frames at 25 fps. Engines:
"lite" (lite.py: a landmark-driven warp of the photo, CPU, always available) and "eat" (eat/: the EAT networks on
official checkpoints); head.backend "auto" picks eat when all its weights are present, else lite. face.py prepares a
photo (detection, landmarks, crop) for both, poses.py holds the head-pose presets and base.py their interface.
"""
from __future__ import annotations

from .base import PreparedFace, TalkingHead, n_frames

__all__ = ["load_head", "n_frames", "PreparedFace", "TalkingHead"]


def load_head(config) -> TalkingHead:
    """The configured engine: "eat" when its weights are all present (auto), else the embedded "lite" engine.

    The fallback reason is kept on the engine (`fallback_reason`) for the doctor and the System tab.
    """
    import logging

    log = logging.getLogger("avatar")
    backend, reason = config.head.backend, None
    if backend in ("auto", "eat"):
        try:
            from .eat.engine import EatEngine, eat_missing_files

            missing = eat_missing_files(config)
            if not missing:
                return EatEngine.load(config)
            shown = ", ".join(str(p) for p in missing[:4]) + (" ..." if len(missing) > 4 else "")
            reason = f"EAT weights missing ({len(missing)} files: {shown})"
        except ImportError as e:
            reason = f"EAT engine unavailable: {e}"
        if backend == "eat":
            log.warning("talking head: %s; falling back to the lite engine", reason)
    from .lite import LiteEngine

    engine = LiteEngine.load(config)
    engine.fallback_reason = reason
    return engine
