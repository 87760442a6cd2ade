"""A hands-free conversation in a real browser: headless Chromium with a WAV file as its microphone holds three
spoken turns on the real app (conversation mode on the Talk tab, WebRTC), the second one interrupted, and the page
measures end of speech -> first sound and first frame, and how soon the avatar falls silent when interrupted.

Chromium plays the fake microphone's file from its start for every new capture, so the test decides when each
question is heard: a fresh capture per question, its track enabled only while that question plays (the file holds
the three questions; the rest of the time the microphone is silent). The figures are printed, not asserted."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from avatar.core.media import resample
from avatar.turn.events import INTERRUPTED_MARK

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RATE = 48000
# in the file, the interrupting question comes first: a fresh capture reaches it at once, while the avatar speaks
QUESTIONS = ["What is the capital of France?", "Hello! What is your name?",
             "Please tell me a long story about a cat who travels to the moon."]
FIRST, SECOND, INTERRUPTING = 1, 2, 0
GAP_S = 1.5
CUT_GRACE_S = 1.0
TURN_TIMEOUT_S = 300  # generous: the machine is shared; the figures, not the waits, tell the speed
GATE = """([fromS, toS]) => (async () => {
  // a fresh capture plays the file from its start (a capture opened while another is live shares its position)
  window.avatarLive.mic.getTracks().forEach((t) => t.stop());
  const mic = await window.avatarLive.microphone();
  const track = mic.getAudioTracks()[0];
  track.enabled = false;
  await window.avatarLive.useMicrophone(mic);
  setTimeout(() => { track.enabled = true; }, fromS * 1000);
  setTimeout(() => { track.enabled = false; }, toS * 1000);
})()"""

# the capture opened when conversation mode starts stays muted: the questions come through GATE
SILENT_START = """() => {
  const open = window.avatarLive.microphone;
  window.avatarLive.microphone = async () => {
    const mic = await open();
    mic.getAudioTracks()[0].enabled = false;
    window.avatarLive.microphone = open;
    return mic;
  };
}"""


@pytest.fixture(scope="module")
def questions_wav(system, tmp_path_factory):
    """The three questions in Piper's English voice, GAP_S of silence around each; their (start, end) in the file."""
    parts, spans, t = [np.zeros(int(GAP_S * RATE), np.float32)], [], GAP_S
    for text in QUESTIONS:
        speech = system.speak(text, language="en")
        samples = resample(speech, RATE).samples
        parts += [samples, np.zeros(int(GAP_S * RATE), np.float32)]
        spans.append((t, t + len(samples) / RATE))
        t += len(samples) / RATE + GAP_S
    path = tmp_path_factory.mktemp("mic") / "questions.wav"
    sf.write(path, (np.concatenate(parts) * 32767).astype(np.int16), RATE, subtype="PCM_16")
    return path, spans


@pytest.fixture(scope="module")
def live_page(questions_wav, app_url, astronaut_png):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs it with apt)")
    from playwright.sync_api import sync_playwright

    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={questions_wav[0]}%noloop",
            "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(app_url, wait_until="domcontentloaded")
        page.locator("#talk-photo input[type=file]").first.set_input_files(str(astronaut_png))
        page.wait_for_selector("#talk-photo img", timeout=30000)
        yield page
        browser.close()


def _speak(page, spans, k: int) -> None:
    start, end = spans[k]
    page.evaluate(GATE, [start - 0.2, end + 0.2])


def _wait_event(page, kind: str, after: int, timeout_s: float = TURN_TIMEOUT_S) -> int:
    """Index of the first server event of this kind at or after `after`; fails the test when it never comes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kinds = page.evaluate("window.avatarLive.events.map((e) => e.kind)")
        found = [i for i, k in enumerate(kinds) if k == kind and i >= after]
        if found:
            return found[0]
        errors = [e for e in page.evaluate("window.avatarLive.events") if e["kind"] == "error"]
        assert not errors, f"the turn failed: {errors}"
        time.sleep(0.1)
    events = page.evaluate("window.avatarLive.events.map((e) => [e.kind, e.text || e.heard || ''])")
    pytest.fail(f"the avatar never sent {kind!r} within {timeout_s} s; events so far: {events}")


def _assert_silent_between(page, cut: int, third: int) -> None:
    """No reply sound starts on the page from CUT_GRACE_S after the server cut the reply off until it sent the next
    answer's first sample (server and page share the machine's clock; the data channel's messages can lag the
    sound). The grace covers sound already sent: the browser's jitter buffer grows when the machine is loaded."""
    events, edges = page.evaluate("[window.avatarLive.events, window.avatarLive.edges.out]")
    start, end = (events[cut]["t"] + CUT_GRACE_S) * 1000, events[third]["t"] * 1000
    sounding = [e for e in edges if e["kind"] == "on" and start < e["t"] < end]
    timeline = [(e["kind"], round(e["t"] * 1000 - start)) for e in events[cut - 3:third + 1]]
    assert not sounding, (f"the avatar kept speaking after it was interrupted: sound at "
                          f"{[round(e['t'] - start) for e in sounding]} ms; server events (ms): {timeline}")


def _history(page) -> list:
    return page.evaluate("fetch(`/live/${window.avatarLive.id}/state`).then((r) => r.json())")["history"]


def test_three_spoken_turns_one_interrupted(live_page, questions_wav, artifacts):
    page, spans = live_page, questions_wav[1]
    page.evaluate(SILENT_START)
    page.locator("#talk-live input[type=checkbox]").check()
    page.wait_for_function("window.avatarLive && window.avatarLive.id", timeout=30000)

    _speak(page, spans, FIRST)  # turn 1: answered and played to its end
    heard = _wait_event(page, "user_turn", 0)
    _wait_event(page, "first_frame", heard)
    played = _wait_event(page, "played", heard)

    _speak(page, spans, SECOND)  # turn 2: interrupted by turn 3's question once the avatar has spoken a little
    second = _wait_event(page, "user_turn", played)
    _wait_event(page, "first_audio", second)
    time.sleep(0.8)
    _speak(page, spans, INTERRUPTING)
    cut = _wait_event(page, "interrupt", second)
    done = _wait_event(page, "interrupted", cut)
    third = _wait_event(page, "first_audio", done)
    _wait_event(page, "played", third)  # turn 3 answered
    _assert_silent_between(page, cut, third)

    metrics = page.evaluate("""({turns: window.avatarLive.turns, interruptions: window.avatarLive.interruptions,
        server: window.avatarLive.events.map((e) => [e.kind, e.t])})""")
    page.screenshot(path=str(artifacts / "live.png"), full_page=True)
    print("hands-free browser figures:", json.dumps(metrics))
    (artifacts / "figures.json").write_text(json.dumps(metrics, indent=1))

    answered = [t for t in metrics["turns"] if t.get("audio_ms") is not None]
    assert len(answered) == 3, metrics  # every turn was heard on the page (turn 2 before it was cut off)
    assert metrics["turns"][0]["frame_ms"] is not None and metrics["turns"][2]["frame_ms"] is not None, metrics
    assert metrics["interruptions"] and metrics["interruptions"][0]["silent_ms"] is not None, \
        "the avatar never fell silent when interrupted"

    history = _history(page)
    assert len(history) == 3, history
    assert "name" in history[0][0].lower() and not history[0][1].endswith(INTERRUPTED_MARK)
    assert "moon" in history[1][0].lower() and history[1][1].endswith(INTERRUPTED_MARK), history
    assert "france" in history[2][0].lower() and not history[2][1].endswith(INTERRUPTED_MARK), history
    page.wait_for_function("document.querySelector('#talk-chatbot').innerText.includes('[interrupted]')",
                           timeout=10000)  # the Talk tab's Chatbot shows the same history
