"""Domain errors: each carries a message a user understands. Only app.py turns them into gr.Error."""


class AvatarError(Exception):
    """Base class for every error whose message is meant for the user."""


class BadAudio(AvatarError):
    """The file is not audio we can decode (or is empty)."""


class AudioTooShort(AvatarError):
    pass


class AudioTooLong(AvatarError):
    pass


class NoSpeech(AvatarError):
    """The audio is silent: nothing to transcribe."""


class TextTooLong(AvatarError):
    pass


class EmptyText(AvatarError):
    pass


class UnknownLanguage(AvatarError):
    pass


class UnknownEmotion(AvatarError):
    pass


class UnknownPose(AvatarError):
    pass


class BadImage(AvatarError):
    """Not an image, or an image we cannot use."""


class NoFaceFound(AvatarError):
    pass


class FaceTooSmall(AvatarError):
    pass


class BackendUnavailable(AvatarError):
    """A configured backend cannot run (missing weights, server down, package not installed)."""


class BackendError(AvatarError):
    """A backend ran but failed (bad response, timeout, corrupt output)."""


class WeightsError(AvatarError):
    """A checkpoint file is missing, truncated, or does not match the network (missing/unexpected keys)."""


class Cancelled(AvatarError):
    """The work was stopped on purpose (Stop, a new turn, an interruption); not a fault."""
