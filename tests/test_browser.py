"""A real browser (Debian chromium, headless, driven by Playwright) on the real app. Screenshots go to
test-artifacts/test_browser/."""
from __future__ import annotations

import shutil
import urllib.request
from urllib.parse import urljoin

import numpy as np
import pytest

from tests.conftest import served_app

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs it with apt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, url, tab: str, viewport: dict | None = None):
    ctx = browser.new_context(viewport=viewport or {"width": 1400, "height": 1100})
    page = ctx.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name=tab).click()
    return ctx, page


def _upload(page, elem_id: str, path) -> None:
    """Uploads through the component's own file input; for an Audio whose first source is the microphone, the
    "Upload file" source button is clicked first, as a person would. Returns once the app has the file and the
    component shows it (not after a guessed time: a busy machine takes longer)."""
    source = page.locator(f"#{elem_id} button[aria-label='Upload file']")
    if source.count():
        source.first.click()
    with page.expect_response(lambda r: "/upload" in r.url and r.request.method == "POST", timeout=60_000):
        page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(path))
    page.locator(f"#{elem_id}").locator("img, audio, video, canvas, .waveform-container, #waveform").first.wait_for(
        state="attached", timeout=60_000)


def test_talk_tab_turn_in_browser(browser, app_url, astronaut_png, speech_wav, artifacts):
    ctx, page = _open(browser, app_url, "对话 Talk")
    try:
        _upload(page, "talk-photo", astronaut_png)
        _upload(page, "talk-audio", speech_wav)
        page.wait_for_timeout(1500)
        page.locator("#talk-send").click()
        video = page.locator("#talk-full video")
        video.wait_for(state="attached", timeout=240_000)
        page.wait_for_function("() => { const v = document.querySelector('#talk-full video');"
                               " return v && v.duration > 0; }", timeout=120_000)
        chat = page.locator("#talk-chatbot")
        page.wait_for_function("() => document.querySelectorAll('#talk-chatbot .message').length >= 2",
                               timeout=60_000)
        text = chat.inner_text().lower()
        assert "fellow americans" in text  # the transcript is shown as the user's message
        bot_messages = page.locator("#talk-chatbot .bot")
        assert bot_messages.count() >= 1 and bot_messages.last.inner_text().strip()
        page.screenshot(path=str(artifacts / "talk.png"), full_page=True)
    finally:
        ctx.close()


PHONE = {"width": 390, "height": 844}
# what the Talk tab's reply place shows: each player's visibility, whether the page marks the reply as playing, the
# idle clip's state, and where the main parts start on the page
STAGE = """() => {
  const seen = id => getComputedStyle(document.querySelector(id)).visibility === 'visible';
  const top = id => Math.round(document.querySelector(id).getBoundingClientRect().top + window.scrollY);
  const idle = document.querySelector('#talk-idle video');
  return {idle: seen('#talk-idle'), reply: seen('#talk-video'), speaking: document.body.classList.contains('talk-speaking'),
          idle_ready: !!idle && idle.readyState >= 2 && !idle.paused && idle.loop,
          same_place: Math.abs(top('#talk-idle') - top('#talk-video')) < 2,
          tops: {screen: top('#talk-screen'), chat: top('#talk-chatbot'), photo: top('#talk-photo'),
                 send: top('#talk-send'), settings: top('#talk-settings')}};
}"""
IDLE_PLAYING = "() => { const v = document.querySelector('#talk-idle video'); return v && v.readyState >= 2 && !v.paused; }"


def test_talk_tab_opens_with_the_default_portrait_and_its_idle_loop(browser, app_url, artifacts):
    """A new visitor sees a portrait and the avatar at rest, moving, where the reply will play (it was an empty
    player and an empty portrait box)."""
    ctx, page = _open(browser, app_url, "对话 Talk")
    try:
        page.wait_for_function("() => { const i = document.querySelector('#talk-photo img');"
                               " return i && i.naturalWidth >= 256; }", timeout=60_000)
        page.wait_for_function(IDLE_PLAYING, timeout=180_000)
        stage = page.evaluate(STAGE)
        assert stage["idle"] and stage["idle_ready"] and not stage["reply"] and not stage["speaking"]
        assert stage["same_place"]  # one place: the hidden player takes no room of its own
        assert stage["tops"]["screen"] < stage["tops"]["chat"]
        page.screenshot(path=str(artifacts / "talk_desktop.png"), full_page=True)
    finally:
        ctx.close()


def test_phone_width_puts_the_reply_before_the_settings(browser, app_url, artifacts):
    """At 390 px the avatar and the conversation come first, then the portrait and Send; the settings start folded
    (they came before the reply video and Send)."""
    ctx, page = _open(browser, app_url, "对话 Talk", PHONE)
    try:
        page.wait_for_function(IDLE_PLAYING, timeout=180_000)
        tops = page.evaluate(STAGE)["tops"]
        assert tops["screen"] < tops["chat"] < tops["photo"] < tops["send"] < tops["settings"]
        assert not page.locator("#talk-speed").is_visible()  # folded
        page.screenshot(path=str(artifacts / "talk_phone.png"), full_page=True)
        page.locator("#talk-settings").get_by_text("设置 Settings").click()
        page.locator("#talk-speed").wait_for(state="visible", timeout=10_000)
    finally:
        ctx.close()


def test_idle_loop_stands_in_until_the_reply_plays(browser, app_url, artifacts):
    """From Send until the first sentence plays the idle loop shows (not an empty player); the reply player while it
    plays; the idle loop again once the reply has ended."""
    ctx, page = _open(browser, app_url, "对话 Talk")
    try:
        page.wait_for_function(IDLE_PLAYING, timeout=180_000)
        page.locator("#talk-text textarea").fill("Hello! How are you?")
        page.locator("#talk-send").click()
        page.wait_for_timeout(500)
        waiting = page.evaluate(STAGE)
        assert waiting["idle"] and not waiting["reply"]
        page.wait_for_function("() => document.body.classList.contains('talk-speaking')", timeout=240_000)
        playing = page.evaluate(STAGE)
        page.screenshot(path=str(artifacts / "talk_playing.png"))
        assert playing["reply"] and not playing["idle"] and playing["same_place"]
        page.wait_for_function("() => { const v = document.querySelector('#talk-video video'); return v && v.ended; }",
                               timeout=240_000)
        after = page.evaluate(STAGE)
        assert after["idle"] and not after["reply"]
    finally:
        ctx.close()


def test_matting_tab_in_browser(browser, app_url, astronaut_png, artifacts):
    ctx, page = _open(browser, app_url, "抠图 Matting")
    try:
        _upload(page, "matte-photo", astronaut_png)
        page.wait_for_timeout(1000)
        page.locator("#matte-go").click()
        page.locator("#matte-out img").wait_for(state="visible", timeout=120_000)
        page.wait_for_function("() => { const i = document.querySelector('#matte-out img');"
                               " return i && i.naturalWidth > 0; }", timeout=60_000)
        page.screenshot(path=str(artifacts / "matting.png"), full_page=True)
    finally:
        ctx.close()


def _send_chat(page, text: str, n_messages: int) -> tuple[str, str]:
    """Types a message on the Chat tab; returns (the whole visible conversation, the last reply)."""
    box = page.get_by_placeholder("Say hello · 打个招呼")
    box.fill(text)
    box.press("Enter")
    tab = page.locator(".tabitem:visible")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('.tabitem')].filter(t => t.offsetParent !== null)"
        f"[0].querySelectorAll('.message').length >= {n_messages}", timeout=120_000)
    reply, previous = "", None
    for _ in range(240):  # the reply streams in: wait until it stops changing
        page.wait_for_timeout(500)
        reply = tab.locator(".bot").last.inner_text().strip()
        if reply and reply == previous and "Loading" not in reply and not tab.locator(".generating").count():
            break
        previous = reply
    return str(tab.locator(".message").all_inner_texts()), reply


def test_two_browser_sessions_keep_separate_histories(browser, app_url, artifacts):
    """The chat model gets greedy decoding and wording it follows (SmolLM2-135M): the second reply of session A
    must use A's first turn; session B, asked the same, never heard the name."""
    ctx_a, page_a = _open(browser, app_url, "聊天 Chat")
    ctx_b, page_b = _open(browser, app_url, "聊天 Chat")
    try:
        _send_chat(page_a, "My name is Alice. Please remember it.", 2)
        b1, _ = _send_chat(page_b, "Hello there.", 2)
        assert "Alice" not in b1
        a2, a_reply = _send_chat(page_a, "What is my name? Answer with just my name.", 4)
        b2, b_reply = _send_chat(page_b, "What is my name? Answer with just my name.", 4)
        page_a.screenshot(path=str(artifacts / "chat_a.png"), full_page=True)
        page_b.screenshot(path=str(artifacts / "chat_b.png"), full_page=True)
        assert "My name is Alice. Please remember it." in a2 and "Alice" not in b2
        assert "Alice" in a_reply and "Alice" not in b_reply  # history reached the model, per session
    finally:
        ctx_a.close()
        ctx_b.close()


def test_chat_markup_never_makes_the_browser_fetch(browser, app_url, artifacts):
    """A chat message with an <img> tag and a markdown image: the browser fetched http://127.0.0.1:9/track.png
    before (an exfiltration channel once a chat model can be steered); now both show as text and nothing is
    requested from the server they name."""
    import http.server
    import threading

    hits: list[str] = []

    class Trap(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    trap = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trap)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{trap.server_address[1]}"
    ctx, page = _open(browser, app_url, "聊天 Chat")
    try:
        box = page.get_by_placeholder("Say hello · 打个招呼")
        box.fill(f'Look: <img src="{url}/tag.png"> and ![x]({url}/markdown.png)')
        box.press("Enter")
        page.wait_for_function("() => document.body.innerText.includes('tag.png')", timeout=120_000)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(artifacts / "chat_markup.png"))
        shown = page.locator(".message").first.inner_text()
    finally:
        ctx.close()
        trap.shutdown()
    assert not hits, f"the browser fetched {hits}"
    assert "<img" in shown  # the tag shows as the text that was typed; the markdown image at most as a link


@pytest.fixture(scope="module")
def enhance_app_url(gfpgan_weights, tmp_path_factory):
    """The app with the enhancement stage only (GFPGAN v1.4 with the seeded weights), on its own port."""
    from avatar.core.config import AvatarConfig
    from avatar.system import AvatarSystem

    cfg = AvatarConfig(weights_dir=str(gfpgan_weights), device="cpu",
                       output_dir=str(tmp_path_factory.mktemp("enhance-out"))).replace(**{"enhance.batch_size": 1})
    yield from served_app(AvatarSystem.load(cfg, stages=("enhance",)))


def test_enhance_tab_photo_and_video_in_browser(browser, enhance_app_url, astronaut, astronaut_png, tmp_path,
                                                artifacts):
    """The Enhance tab as a person uses it: a photo, then a 12-frame video; it shows "enhanced k/12 frames" while
    its frames are enhanced, Stop ends it ("Stopped.", no result), and the next try brings both results back with the
    face changed and the rest kept."""
    from avatar.core import media

    frames = np.stack([np.roll(astronaut, k, axis=1) for k in range(0, 24, 2)])
    video = media.write_video(tmp_path / "clip.mp4", [frames])
    ctx, page = _open(browser, enhance_app_url, "人脸增强 Enhance")
    try:
        _upload(page, "enhance-photo", astronaut_png)
        page.locator("#enhance-go").click()
        page.wait_for_function("() => { const i = document.querySelector('#enhance-out img');"
                               " return i && i.naturalWidth > 0; }", timeout=120_000)
        photo_src = page.locator("#enhance-out img").get_attribute("src")

        _upload(page, "enhance-video", video)
        progress = "() => /enhanced [1-4]\\/12 frames/.test(document.querySelector('#enhance-video-out').innerText)"
        page.locator("#enhance-video-go").click()
        page.wait_for_function(progress, timeout=60_000)  # the stage's own progress (a frame per batch here)
        page.locator("#enhance-video-stop").click()  # Stop, then the same video again
        page.wait_for_function("() => !/enhanc/.test(document.querySelector('#enhance-video-out').innerText)",
                               timeout=30_000)
        page.get_by_text("Stopped.").first.wait_for(timeout=10_000)
        assert not page.locator("#enhance-video-out video").count()
        page.locator("#enhance-video-go").click()
        page.wait_for_function(progress, timeout=60_000)
        progress_seen = page.locator("#enhance-video-out").inner_text()
        page.wait_for_function("() => { const v = document.querySelector('#enhance-video-out video');"
                               " return v && v.duration > 0; }", timeout=240_000)
        page.screenshot(path=str(artifacts / "enhance.png"), full_page=True)
        video_src = page.locator("#enhance-video-out video").get_attribute("src")
    finally:
        ctx.close()
    print(f"while enhancing: {progress_seen!r}")
    photo = _fetched_image(enhance_app_url, photo_src, tmp_path / "out.png")
    frames = _fetched_video(enhance_app_url, video_src, tmp_path / "out.mp4")
    assert frames.shape == (12, 512, 512, 3)
    source = next(media.read_video(video))  # the frames as decoded from the uploaded file
    for out, original in [(photo, astronaut), (frames[0], source[0]), (frames[11], source[11])]:
        diff = np.abs(out.astype(int) - original.astype(int))
        assert diff[95:160, 200:260].mean() > 1 and diff[400:, :100].mean() < 2  # the face changed, the corner kept


def _fetched(base_url: str, src: str, path):
    """The file behind a result's src, downloaded from the app as the browser got it."""
    with urllib.request.urlopen(urljoin(base_url, src), timeout=60) as r:
        path.write_bytes(r.read())
    return path


def _fetched_image(base_url: str, src: str, path) -> np.ndarray:
    from avatar.core import media

    return media.load_image(_fetched(base_url, src, path))


def _fetched_video(base_url: str, src: str, path) -> np.ndarray:
    from avatar.core import media

    return np.concatenate(list(media.read_video(_fetched(base_url, src, path))))


def test_render_tab_stop_ends_the_render_and_the_next_one_runs(browser, app_url, system, astronaut_png, jfk_path,
                                                               speech_wav, tmp_path, artifacts):
    """Stop on the Video from audio tab while a 33 s clip renders: the progress goes, no video and no unfinished file
    are left, and the next render (4.4 s of speech, another session) is not stuck behind the stopped one."""
    from avatar.core import media
    from avatar.core.types import Audio

    take = media.load_audio(jfk_path, 16000).samples
    long_speech = media.save_wav(Audio(np.concatenate([take] * 3), 16000), tmp_path / "long.wav")
    before = set(system.output_dir.rglob("*.mp4"))
    ctx, page = _render_tab(browser, app_url, astronaut_png, long_speech)
    try:
        page.wait_for_function("() => /rendered \\d+\\/\\d+ frames/.test("
                               "document.querySelector('#render-video').innerText)", timeout=120_000)
        shown = page.locator("#render-video").inner_text()
        page.locator("#render-stop").click()
        page.wait_for_function("() => !/rendered|rendering/.test(document.querySelector('#render-video').innerText)",
                               timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / "stopped.png"), full_page=True)
        assert not page.locator("#render-video video").count()
    finally:
        ctx.close()
    left = {p for p in set(system.output_dir.rglob("*.mp4")) - before if p.parent.name != "idle"}  # idle loops
    assert not left, f"the stopped render left {left}"
    print(f"progress when stopped: {shown!r}")

    ctx, page = _render_tab(browser, app_url, astronaut_png, speech_wav)
    try:
        page.wait_for_function("() => { const v = document.querySelector('#render-video video');"
                               " return v && v.duration > 0; }", timeout=180_000)
        page.screenshot(path=str(artifacts / "next.png"), full_page=True)
    finally:
        ctx.close()


def _render_tab(browser, url: str, photo, speech):
    """A new session on the Video from audio tab with the photo and the speech uploaded and Render clicked."""
    ctx, page = _open(browser, url, "语音生成视频 Video from audio")
    _upload(page, "render-photo", photo)
    _upload(page, "render-audio", speech)
    page.locator("#render-go").click()
    return ctx, page
