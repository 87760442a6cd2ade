"""The checks every entry point of AvatarSystem applies to what a user sends, before any stage runs: each refusal is
a domain error with a sentence a user understands, and nothing non-finite or absurdly sized reaches native code.

Audio is checked where it is made (core.types.Audio refuses NaN/Inf samples), text by core.text.check_text (control
characters removed), images by core.media.load_image (pixel count before decoding) and check_photo here (sides);
colours, sizes and numbers by the functions below.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .errors import AvatarError, BadImage

NAMED_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
                 "red": (255, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}
_HEX = re.compile(r"#?([0-9a-f]{3}|[0-9a-f]{6})")
_FUNCTION = re.compile(r"rgba?\((.*)\)")
COLOUR_HELP = "use '#RRGGBB' (e.g. '#2f6f4f'), 'rgb(47, 111, 79)', a name such as 'white', or 'none'"


class BadValue(AvatarError):
    """A parameter (colour, size, intensity, ...) a user can correct."""


def parse_colour(background: str | tuple | list | None) -> tuple[int, int, int] | None:
    """'#RRGGBB', '#RGB', 'rgb(r,g,b)', 'rgba(r,g,b,a)', a few names, 'none' or an (r,g,b) sequence -> (r,g,b) or
    None (keep the photo's background). Anything else: BadValue saying what is accepted."""
    if background is None:
        return None
    if isinstance(background, (tuple, list)):
        return _rgb(background, repr(tuple(background)))
    if not isinstance(background, str):
        raise BadValue(f"the background colour must be text, not {type(background).__name__}; {COLOUR_HELP}")
    text = background.strip().lower()
    if text in ("", "none", "original", "transparent"):
        return None
    if text in NAMED_COLOURS:
        return NAMED_COLOURS[text]
    if _HEX.fullmatch(text):
        digits = text.lstrip("#")
        digits = "".join(c * 2 for c in digits) if len(digits) == 3 else digits
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    match = _FUNCTION.fullmatch(text.replace(" ", ""))
    if match:
        parts = match.group(1).split(",")
        if len(parts) in (3, 4):
            return _rgb(parts[:3], background)
    raise BadValue(f"{_shown(background)} is not a colour; {COLOUR_HELP}")


def _rgb(parts, shown: str) -> tuple[int, int, int]:
    try:
        values = [float(str(p).strip().rstrip("%")) for p in parts]
    except ValueError:
        raise BadValue(f"{_shown(shown)} is not a colour; {COLOUR_HELP}") from None
    if len(values) != 3 or not all(math.isfinite(v) and 0 <= v <= 255 for v in values):
        raise BadValue(f"{_shown(shown)} is not a colour: red, green and blue must be numbers from 0 to 255")
    return tuple(int(round(v)) for v in values)  # type: ignore[return-value]


def _shown(value: str) -> str:
    """A user's value quoted for a message, printable and short."""
    clean = "".join(c if c.isprintable() else "?" for c in str(value))
    return repr(clean[:40] + ("..." if len(clean) > 40 else ""))


def finite_number(value, name: str, low: float, high: float) -> float:
    """A number within [low, high] (NaN, infinity, text and None refused with the range to use)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadValue(f"{name} must be a number from {low:g} to {high:g}, not {_shown(value)}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise BadValue(f"{name} must be a number from {low:g} to {high:g}, not {_shown(value)}")
    return number


def video_size(value, default: int, allowed: tuple[int, ...] = (256, 512)) -> int:
    """The output side in px: one of `allowed` (ints or their text, as API clients send them); None -> default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        size = int(str(value).strip().removesuffix("px").strip()) if not isinstance(value, bool) else None
    except ValueError:
        size = None
    if size not in allowed:
        raise BadValue(f"the video size must be {' or '.join(map(str, allowed))} px, not {_shown(value)}")
    return size


def check_photo(image: np.ndarray, min_side: int, max_side: int | None = None) -> np.ndarray:
    """An RGB photo whose sides a face fits in: at least min_side px each (a 1-px strip is refused with its size)."""
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        raise BadImage(f"the image is {width}x{height} px; a photo must be at least {min_side} px on each side")
    if max_side is not None and max(height, width) > 8 * max_side:
        raise BadImage(f"the image is {width}x{height} px; at most {8 * max_side} px on a side can be used")
    return image
