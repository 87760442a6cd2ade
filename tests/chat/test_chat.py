"""The chat stage with the embedded SmolLM2 (greedy decoding): history per conversation, the English-only notice,
input checks, history left unchanged by errors and cancels, the context bound."""
import pytest

from avatar.chat import ENGLISH_ONLY_NOTICE_ZH, ChatModel, Conversation, TagFilter, bench, is_mostly_chinese
from avatar.core.config import AvatarConfig
from avatar.core.emotion import analyze_text
from avatar.core.errors import AvatarError, EmptyText, TextTooLong

pytestmark = pytest.mark.slow

NAME_TURNS = ("My name is Alice. Please remember it.", "What is my name? Answer with just my name.")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    empty_weights = tmp_path_factory.mktemp("no-weights")  # "auto" finds no ChatGLM2/GLM/Qwen here: SmolLM2
    return AvatarConfig(weights_dir=str(empty_weights)).replace(
        **{"chat.temperature": 0.0, "chat.max_new_tokens": 32})


@pytest.fixture(scope="module")
def chat(cfg):
    return ChatModel.load(cfg)


def test_auto_falls_back_to_the_embedded_model(chat, cfg):
    assert (chat.backend, chat.device, chat.languages) == ("smollm2", "cpu", {"en"})
    assert str(cfg.weights_path("chatglm2-6b")) in chat.fallback_reason
    assert "ChatGLM2" in chat.chinese_models_hint and "Qwen" in chat.chinese_models_hint
    assert str(chat.cfg.weights_path("chatglm2-6b")) in chat.chinese_models_hint  # this config's folder


def test_second_turn_sees_the_first(chat):
    conv = chat.new_conversation()
    first = chat.reply(conv, NAME_TURNS[0])
    stream = chat.stream(conv, NAME_TURNS[1])
    deltas = list(stream)
    print("\nreplies:", repr(first), "|", repr(stream.text))
    assert len(deltas) >= 3 and "".join(deltas) == stream.text  # streamed piece by piece
    assert "Alice" in stream.text
    assert conv.rounds == [(NAME_TURNS[0], first), (NAME_TURNS[1], stream.text)]


def test_conversations_do_not_share_history(chat):
    alice = chat.new_conversation()
    chat.reply(alice, NAME_TURNS[0])
    other = chat.new_conversation()
    assert other.id != alice.id
    assert chat.build_request(other, NAME_TURNS[1]).history == ()
    reply = chat.reply(other, NAME_TURNS[1])
    assert "Alice" not in reply
    assert len(alice) == 1 and len(other) == 1


def test_chinese_gets_the_english_only_notice(chat):
    conv = chat.new_conversation()
    stream = chat.stream(conv, "你好，今天天气怎么样？", language="zh")
    assert "".join(stream) == ENGLISH_ONLY_NOTICE_ZH and stream.notice
    assert chat.reply(conv, "我想和你聊聊天", language="en") == ENGLISH_ONLY_NOTICE_ZH  # detected from the text
    assert chat.reply(conv, "我想和你聊聊天", language="auto") == ENGLISH_ONLY_NOTICE_ZH
    assert conv.rounds == []  # a notice is not a model reply: the history stays English
    assert is_mostly_chinese("好的 OK") and not is_mostly_chinese("I love 北京 very much indeed")


def test_input_errors_leave_history_unchanged(chat, cfg):
    conv = chat.new_conversation()
    conv.add("Hello", "Hi there!")
    with pytest.raises(EmptyText):
        chat.stream(conv, "   \n")
    with pytest.raises(TextTooLong):
        chat.reply(conv, "a" * (cfg.limits.max_text_chars + 1))
    assert conv.rounds == [("Hello", "Hi there!")]


def test_exception_or_cancel_mid_stream_leaves_history_unchanged(chat):
    conv = chat.new_conversation()
    with pytest.raises(RuntimeError, match="listener left"):
        for i, _ in enumerate(chat.stream(conv, "Tell me a story about a cat.")):
            if i == 2:
                raise RuntimeError("listener left")
    stream = chat.stream(conv, "Tell me a story about a dog.")
    assert next(stream)
    stream.close()
    assert not stream.finished and conv.rounds == []
    with pytest.raises(StopIteration):
        next(stream)


def test_context_bound_drops_the_oldest_rounds(chat, cfg):
    small = ChatModel(chat._backend, cfg.replace(**{"chat.context_tokens": 160}))
    conv = small.new_conversation()
    for i in range(6):
        conv.add(f"Question number {i}: what do you think about rivers and mountains?",
                 f"Answer number {i}: I think rivers and mountains are lovely places to walk and rest.")
    request = small.build_request(conv, "And what about the sea?")
    assert 0 < len(request.history) < 6
    assert request.history == tuple(conv.rounds[-len(request.history):])  # the newest rounds are kept
    assert small._backend.count_tokens(request) <= 160
    assert len(conv) == 6  # the stored history is not touched, only the prompt


def test_conversation_is_bounded_and_clearable():
    conv = Conversation(max_rounds=2)
    for i in range(3):
        conv.add(f"q{i}", f"a{i}")
    assert conv.rounds == [("q1", "a1"), ("q2", "a2")]
    conv.clear()
    assert conv.rounds == [] and conv.last_emotion_tag is None
    no_memory = Conversation(max_rounds=0)  # rounds[-0:] is the whole list: 0 used to mean "keep everything"
    for i in range(3):
        no_memory.add(f"q{i}", f"a{i}")
    assert no_memory.rounds == []


def test_conversation_transcript_keeps_what_the_model_forgot(monkeypatch):
    """The download holds every exchange since Clear, although the model sees only the last max_rounds."""
    import avatar.chat as chat_module

    conv = Conversation(max_rounds=2)
    for i in range(4):
        conv.add(f"q{i}", f"a{i}")
    assert conv.rounds == [("q2", "a2"), ("q3", "a3")]
    assert conv.transcript() == [(f"q{i}", f"a{i}") for i in range(4)]
    conv.clear()
    assert conv.transcript() == []
    monkeypatch.setattr(chat_module, "MAX_KEPT_ROUNDS", 3)  # bounded all the same
    no_memory = Conversation(max_rounds=0)
    for i in range(5):
        no_memory.add(f"q{i}", f"a{i}")
    assert no_memory.transcript() == [(f"q{i}", f"a{i}") for i in (2, 3, 4)]


def test_system_prompt_persona_and_mood(chat, cfg):
    request = chat.build_request(chat.new_conversation(), "Hello!", mood="sad")
    assert request.system.startswith(chat.system_prompt) and "sad" in request.system
    assert "[happy]" not in request.system  # SmolLM2 is not asked for emotion tags
    from_transcript = chat.build_request(chat.new_conversation(), "Hi", mood=analyze_text("I'm terrified.", "en"))
    assert "feel fear" in from_transcript.system  # the user's mood from the ASR transcript, as a Mood
    assert "three short sentences" in chat.system_prompt
    with pytest.raises(AvatarError, match="unknown persona"):
        ChatModel(chat._backend, cfg.replace(**{"chat.persona": "pirate"}))


def test_tag_filter_removes_streamed_tags():
    pieces = ["[ha", "ppy]", " Great", " to see", " you [no", "te] again", "!"]
    tags = TagFilter()
    shown = "".join(tags.feed(p) for p in pieces)
    tail, clean, tag = tags.finish()
    assert shown + tail == clean == "Great to see you [note] again!" and tag == "happy"


def test_tag_filter_holds_back_a_chinese_tag_split_across_pieces():
    """【开 then 心】: showing 【开 early made every later piece vanish from the spoken reply."""
    pieces = ["【开", "心】你好，很高兴", "见到你。", "今天聊点什么呢？"]
    tags = TagFilter()
    shown = [tags.feed(p) for p in pieces]
    tail, clean, tag = tags.finish()
    assert "".join(shown) + tail == clean == "你好，很高兴见到你。今天聊点什么呢？" and tag == "happy"
    assert shown[0] == "" and shown[-1]  # held back only while the tag was open


def test_bench_reports_latency_and_speed(chat):
    result = bench(chat, max_new_tokens=8)
    print("\nchat bench:", result)
    assert result["backend"] == "smollm2" and result["new_tokens"] >= 2
    assert 0 < result["first_token_s"] <= result["total_s"] and result["tokens_per_s"] > 0


def test_auto_picks_chatglm2_from_its_folder(tmp_path):
    """A ChatGLM2 folder (tiny config, the real tokenizer, seeded weights) under weights_dir -> backend chatglm2,
    driven through the same ChatModel interface (avatar/chat/chatglm2.py does the generation)."""
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    ref = Path(__file__).resolve().parents[3] / "shared" / "reference"
    sys.path.insert(0, str(ref.parent / "tools"))
    from seeded_weights import seeded_state_dict

    folder = tmp_path / "chatglm2-6b"
    folder.mkdir()
    (folder / "config.json").write_bytes((ref / "chatglm2_tiny_config.json").read_bytes())
    (folder / "tokenizer.model").write_bytes((ref / "chatglm2_tokenizer.model").read_bytes())
    save_file(seeded_state_dict(str(ref / "chatglm2_tiny.tsv"), 1234), folder / "model.safetensors")
    cfg = AvatarConfig(weights_dir=str(tmp_path), device="cpu").replace(
        **{"chat.temperature": 0.0, "chat.max_new_tokens": 8, "chat.dtype": "float32"})
    glm = ChatModel.load(cfg)
    assert (glm.backend, glm.fallback_reason, glm.languages) == ("chatglm2", None, {"zh", "en"})
    conv = glm.new_conversation()
    request = glm.build_request(conv, "你好")
    assert "[happy]" in request.system  # a 6B model is asked for an emotion tag
    stream = glm.stream(conv, "你好，请用English介绍一下你自己。", language="zh")
    deltas = list(stream)
    assert not stream.notice and "".join(deltas) == stream.text  # generated, not the English-only notice
    assert conv.rounds == [("你好，请用English介绍一下你自己。", stream.text)]


def test_converted_smollm2_is_cached_and_equal(chat):
    """The GGUF is converted once and kept as safetensors; the cached copy must give the GGUF's own greedy reply
    (compared with a fresh load of the GGUF itself, whatever the cache held before this run)."""
    from avatar.chat import ChatRequest, GenerationParams, load_smollm2
    from avatar.chat.smollm2 import smollm2_cache
    from avatar.chat.smollm2 import smollm2_path
    from avatar.core.config import ChatConfig
    from avatar.chat.transformers import HFChatBackend

    load_smollm2()
    folder = smollm2_cache()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    request = ChatRequest("You are helpful.", (), "What is the capital of France?",
                          GenerationParams.from_config(ChatConfig(temperature=0)))
    cached = HFChatBackend.load(folder, device="cpu", dtype="float32", name="smollm2", languages=frozenset({"en"}))
    gguf = smollm2_path()
    original = HFChatBackend.load(gguf.parent, device="cpu", dtype="float32", gguf_file=gguf.name, name="smollm2",
                                  languages=frozenset({"en"}))
    reply = "".join(original.stream(request))
    assert "Paris" in reply and "".join(cached.stream(request)) == reply
