"""Property-based: random and extreme audio, images and parameters into every AvatarSystem method. The only allowed
outcomes are a result or a domain error (AvatarError: a sentence for the user); anything else, or a crash of the
process, fails. Native code (the lite warp, CTranslate2, ffmpeg, OpenCV) must never see NaN, infinity or absurd
sizes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avatar.core.errors import AvatarError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 1e-45, 2.0, -2.0])
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), SPECIAL)


@st.composite
def audio_inputs(draw):
    """What Gradio and API clients hand over: (sample_rate, array) of any dtype, length and channel count."""
    rate = draw(st.sampled_from([16000, 44100, 8000, 22050, 48000, 96000, 1, 0, -16000, 3]))
    n = draw(st.integers(0, 3 * 16000))
    channels = draw(st.sampled_from([None, 1, 2, 8]))
    shape = (n,) if channels is None else (n, channels)
    kind = draw(st.sampled_from(["float32", "float64", "int16", "int32", "uint8"]))
    if kind.startswith("float"):
        base = draw(st.sampled_from(["speechlike", "special"]))
        x = 0.2 * np.sin(np.arange(int(np.prod(shape))) / 9.0).reshape(shape) if base == "speechlike" else \
            np.full(shape, draw(SPECIAL))
        if x.size and draw(st.booleans()):
            x.flat[draw(st.integers(0, x.size - 1))] = draw(SPECIAL)
        return rate, x.astype(kind)
    info = np.iinfo(kind)
    return rate, draw(hnp.arrays(kind, shape, elements=st.integers(info.min, info.max), fill=st.just(0)))


@st.composite
def images(draw, astronaut):
    kind = draw(st.sampled_from(["crop", "random", "special"]))
    if kind == "crop":
        h, w = draw(st.integers(1, 512)), draw(st.integers(1, 512))
        return astronaut[:h, :w].copy()
    shape = draw(st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 5])))
    if kind == "special":
        return np.full(shape, draw(SPECIAL), np.float64)
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_, np.int64]))
    return draw(hnp.arrays(dtype, shape))


TEXTS = st.one_of(st.text(max_size=60), st.sampled_from(["", "\x00", "a\x00b", "\u202eevil", "😀" * 10, "你好" * 300,
                                                        "<img src=x onerror=alert(1)>", "rgb(", "nan"]))
COLOURS = st.one_of(st.none(), TEXTS, st.sampled_from(["rgb(a,b,c)", "rgba(nan,0,0,1)", "#12345", "#fff",
                                                      "rgb(300,0,0)", "rgba(1,2,3,0.5)", "none"]),
                    st.tuples(FLOATS, FLOATS, FLOATS))
SIZES = st.one_of(st.none(), st.integers(-10, 2000), st.sampled_from(["256", "512", "abc", "", 256.0, True]))


def only_domain_errors(call):
    try:
        call()
    except AvatarError:
        pass


@pytest.fixture(scope="module")
def speech(jfk_path):
    from avatar.core import media

    return media.load_audio(jfk_path, 16000)


@FUZZ
@given(data=st.data())
def test_transcribe(system, data):
    only_domain_errors(lambda: system.transcribe(data.draw(audio_inputs()), data.draw(TEXTS | st.just("auto"))))


@FUZZ
@given(text=TEXTS, language=st.one_of(TEXTS, st.sampled_from(["auto", "zh", "en"])))
def test_speak(system, text, language):
    only_domain_errors(lambda: system.speak(text, language))


@settings(FUZZ, max_examples=10)
@given(text=TEXTS)
def test_chat(system, text):
    conversation = system.new_conversation()
    only_domain_errors(lambda: list(system.chat(conversation, text)))


@FUZZ
@given(data=st.data())
def test_prepare_and_matte(system, astronaut, data):
    image = data.draw(images(astronaut))
    only_domain_errors(lambda: system.prepare_photo(image))
    only_domain_errors(lambda: system.matte(image, data.draw(COLOURS)))
    only_domain_errors(lambda: system.enhance(image))


@FUZZ
@given(data=st.data())
def test_render_parameters(system, astronaut, speech, tmp_path_factory, data):
    """Good photo and speech, random everything else: the checks refuse, the engine never sees a bad value."""
    from avatar.core.types import Audio

    clip = Audio(speech.samples[: data.draw(st.integers(0, 8000))].copy(), 16000)
    out = tmp_path_factory.mktemp("fuzz") / "out.mp4"
    only_domain_errors(lambda: system.render(
        astronaut, clip, data.draw(st.one_of(TEXTS, st.sampled_from(["happy", "sad"]))),
        data.draw(st.one_of(st.none(), TEXTS, st.sampled_from(["talking", "still"]))), data.draw(COLOURS),
        data.draw(SIZES), data.draw(st.booleans()), out_path=out, intensity=data.draw(st.one_of(st.none(), FLOATS))))


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_render_audio(system, astronaut, tmp_path_factory, data):
    out = tmp_path_factory.mktemp("fuzz") / "out.mp4"
    only_domain_errors(lambda: system.render(astronaut, data.draw(audio_inputs()), "neutral", "still", None, 256,
                                             out_path=out))
