"""Talk to an avatar made from one portrait photo: ASR -> chat -> TTS -> talking head -> matting -> enhancement."""
from avatar.core.config import AvatarConfig
from avatar.core.types import EMOTIONS, Audio, PoseSequence

__all__ = ["AvatarConfig", "AvatarSystem", "Audio", "PoseSequence", "EMOTIONS"]


def __getattr__(name: str):
    if name == "AvatarSystem":  # lazy: importing the package must stay cheap (CLI start-up, config use)
        from .system import AvatarSystem

        return AvatarSystem
    raise AttributeError(name)
