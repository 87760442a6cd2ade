"""Text emotion analysis: a table of sentences written for this test (2 per EAT label and language) with the label a
reader would give; accuracy is printed per language and must reach 75 %."""
import pytest

from avatar.core.emotion import Mood, analyze_text, extract_emotion_tag, reply_emotion
from avatar.core.types import EMOTIONS

EN = [
    ("I am so angry that they cancelled my flight again!", "angry"),
    ("Stop lying to me, this is outrageous and I'm furious.", "angry"),
    ("Honestly, their pathetic little project is beneath my attention.", "contempt"),
    ("He calls that a plan? What a joke, only an amateur would be proud of it.", "contempt"),
    ("The kitchen smelled so rotten that I almost threw up.", "disgusted"),
    ("Ew, there's a hair in my soup, that is disgusting.", "disgusted"),
    ("I'm terrified of walking home alone in the dark.", "fear"),
    ("My hands are shaking, I'm really scared about the surgery tomorrow.", "fear"),
    ("I just got the job and I'm so happy!", "happy"),
    ("We had a wonderful time at the beach, I love weekends like this.", "happy"),
    ("The meeting has been moved to three o'clock on Tuesday.", "neutral"),
    ("Please put the blue folder on the second shelf.", "neutral"),
    ("My grandmother passed away last week and I miss her so much.", "sad"),
    ("I feel lonely and nobody seems to care about me.", "sad"),
    ("Wow, I can't believe you remembered my birthday!", "surprised"),
    ("What? The shop closed suddenly? I never expected that.", "surprised"),
]
ZH = [
    ("他又迟到了一个小时，我真的气死了！", "angry"),
    ("凭什么把我的东西扔掉？太过分了，我很生气。", "angry"),
    ("就他那点水平也想当经理？真让人看不起。", "contempt"),
    ("这种低级的错误也会犯，呵呵，真是可笑。", "contempt"),
    ("垃圾桶里的剩饭已经发臭了，真恶心。", "disgusted"),
    ("看到地上的呕吐物，我差点想吐。", "disgusted"),
    ("半夜听到门外有奇怪的声音，我好害怕。", "fear"),
    ("明天要做手术了，我特别紧张，也很担心。", "fear"),
    ("今天收到了录取通知书，我太开心了！", "happy"),
    ("和朋友们一起吃火锅，真是快乐的一天。", "happy"),
    ("会议改到周二下午三点举行。", "neutral"),
    ("请把蓝色的文件夹放在第二层书架上。", "neutral"),
    ("我的小狗昨天去世了，我很难过。", "sad"),
    ("一个人在外地过年，感觉特别孤独。", "sad"),
    ("天哪，你居然还记得我的生日！", "surprised"),
    ("没想到这家店突然关门了，真让人吃惊。", "surprised"),
]
GOAL = 0.75


def _accuracy(table, language):
    misses = []
    for text, expected in table:
        got = analyze_text(text, language)
        if got.label != expected:
            misses.append(f"{text} -> {got.label} (expected {expected})")
    accuracy = 1 - len(misses) / len(table)
    print(f"\nemotion accuracy [{language}]: {accuracy:.0%} ({len(table) - len(misses)}/{len(table)})")
    for m in misses:
        print("  miss:", m)
    return accuracy


def test_tables_cover_every_label_twice():
    for table in (EN, ZH):
        assert sorted(label for _, label in table) == sorted(EMOTIONS * 2)


@pytest.mark.parametrize("table,language", [(EN, "en"), (ZH, "zh")], ids=["en", "zh"])
def test_accuracy_per_language(table, language):
    assert _accuracy(table, language) >= GOAL


def test_mood_is_a_distribution_over_the_eat_labels():
    mood = analyze_text("I am so happy today!", "en")
    assert isinstance(mood, Mood) and mood.label == "happy"
    assert set(mood.scores) == set(EMOTIONS)
    assert abs(sum(mood.scores.values()) - 1) < 1e-6
    assert 0 < mood.confidence <= 1 and mood.confidence == pytest.approx(mood.scores["happy"], abs=1e-4)


def test_negation_flips_joy_and_auto_language_detection():
    assert analyze_text("I am not happy with this at all.", "en").label == "sad"
    assert analyze_text("我一点也不开心。", "auto").label == "sad"
    assert analyze_text("我好开心", "auto").label == "happy"
    assert analyze_text("", "en").label == "neutral"


def test_extract_emotion_tag():
    assert extract_emotion_tag("[happy] Great to see you!") == ("Great to see you!", "happy")
    assert extract_emotion_tag("【开心】你好！") == ("你好！", "happy")
    assert extract_emotion_tag("Oh no. [Sadness]") == ("Oh no. ", "sad")
    assert extract_emotion_tag("See [note] 3.") == ("See [note] 3.", None)
    assert extract_emotion_tag("LONDON [laughs]") == ("LONDON ", "happy")  # a stage direction is not read aloud
    assert extract_emotion_tag("Oh dear [sighs] that is sad.") == ("Oh dear that is sad.", "sad")


def test_reply_emotion_prefers_the_tag():
    text = "I am so happy for you!"
    assert reply_emotion(text, "en", tag="surprised").label == "surprised"
    tagged = reply_emotion("[sad] " + text, "en")
    assert tagged.label == "sad" and tagged.confidence == 1.0
    assert reply_emotion(text, "en", tag=None).label == "happy"  # no tag: the lexicon decides
