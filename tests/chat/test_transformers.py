"""Backend "transformers": a tiny random Qwen2 (a natively supported architecture) with a real byte-level BPE
tokenizer and a ChatML chat template, saved to a folder and loaded by our backend like a downloaded model."""
import json

import pytest
import torch

from avatar.chat import ChatModel, ChatRequest, GenerationParams, is_chatglm_folder
from avatar.core.config import AvatarConfig
from avatar.chat.transformers import HFChatBackend, is_native_chat_folder

CORPUS = [
    "Hello, how are you today? I am fine, thank you. My name is Alice and I like tea.",
    "The weather is nice. Let us talk about music, books and travel.",
    "你好，今天天气很好。我们聊聊音乐和旅行吧。",
] * 20
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = _build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(model_dir):
    return HFChatBackend.load(model_dir, device="cpu", dtype="float32")


def _request(query="What is my name?", history=(("My name is Alice.", "Nice to meet you, Alice."),), **params):
    return ChatRequest("You are kind.", tuple(history), query, GenerationParams(**{"max_new_tokens": 12, **params}))


def test_folder_detection(model_dir, tmp_path):
    assert is_native_chat_folder(model_dir)
    glm = tmp_path / "glm"
    glm.mkdir()
    (glm / "config.json").write_text(json.dumps({"model_type": "chatglm"}))
    (glm / "pytorch_model.bin").write_bytes(b"")
    assert is_chatglm_folder(glm) and not is_native_chat_folder(glm)  # remote-code model: not native
    assert not is_native_chat_folder(tmp_path / "missing")


def test_prompt_uses_the_chat_template_and_history(backend):
    prompt = backend.tokenizer.decode(backend.prompt_ids(_request()))
    assert prompt.startswith("<|im_start|>system\nYou are kind.<|im_end|>")
    assert "<|im_start|>user\nMy name is Alice.<|im_end|>" in prompt
    assert "<|im_start|>assistant\nNice to meet you, Alice.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>user\nWhat is my name?<|im_end|>\n<|im_start|>assistant\n")
    assert backend.count_tokens(_request()) > backend.count_tokens(_request(history=()))


def test_stream_yields_deltas_and_is_seeded(backend):
    deltas = list(backend.stream(_request(temperature=0.9, seed=3)))
    assert len(deltas) >= 2 and all(isinstance(d, str) and d for d in deltas)
    again = "".join(backend.stream(_request(temperature=0.9, seed=3)))
    assert "".join(deltas) == again  # same seed, same reply
    ids = list(backend.generate_ids(backend.prompt_ids(_request(temperature=0.0)), GenerationParams(5, 0.0)))
    assert len(ids) <= 5 and backend.eos_ids.isdisjoint(ids)


def test_closing_the_stream_stops_generation(backend):
    stream = backend.generate_ids(backend.prompt_ids(_request()), GenerationParams(max_new_tokens=50))
    first = next(stream)
    stream.close()
    assert isinstance(first, int)
    with pytest.raises(StopIteration):
        next(stream)


def test_chat_model_with_transformers_backend(model_dir):
    cfg = AvatarConfig(device="cpu").replace(**{"chat.backend": "transformers", "chat.model_dir": str(model_dir),
                                                 "chat.max_new_tokens": 10, "chat.emotion_tag": False,
                                                 "chat.temperature": 0.7})  # greedy, a random model may end at once
    chat = ChatModel.load(cfg)
    assert (chat.backend, chat.device, chat.fallback_reason) == ("transformers", "cpu", None)
    assert chat.languages == {"zh", "en"}
    conv = chat.new_conversation()
    stream = chat.stream(conv, "你好，今天天气很好。", language="zh")
    text = "".join(stream)
    assert not stream.notice and text == stream.text and text  # a bilingual backend generates for Chinese
    assert conv.rounds == [("你好，今天天气很好。", text)]
    auto = ChatModel.load(cfg.replace(**{"chat.backend": "auto"}))
    assert auto.backend == "transformers"  # auto: a native model folder (no ChatGLM2 there)


def test_missing_folder_raises_backend_unavailable(tmp_path):
    from avatar.core.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="not found"):
        HFChatBackend.load(tmp_path / "nothing")


def test_prefix_cache_reuse_gives_the_same_tokens(backend):
    first_turn = _request(temperature=0.0, max_new_tokens=8, repetition_penalty=1.0)
    prompt = backend.prompt_ids(first_turn)
    backend._prefixes.checkout()  # start empty
    cold = list(backend.generate_ids(prompt, first_turn.params))
    assert backend.last_reused_tokens == 0
    warm = list(backend.generate_ids(prompt, first_turn.params))
    assert backend.last_reused_tokens == len(prompt) - 1 and warm == cold
    reply = backend.tokenizer.decode(cold, skip_special_tokens=True)
    second_turn = _request(query="And where do I live?", history=first_turn.history + (("What is my name?", reply),),
                           temperature=0.0, max_new_tokens=8, repetition_penalty=1.0)
    prompt2 = backend.prompt_ids(second_turn)
    reused = list(backend.generate_ids(prompt2, second_turn.params))
    assert backend.last_reused_tokens >= len(prompt)  # the whole first-turn prompt (persona + round 1 + question)
    kept = backend._prefixes.checkout()  # as if another reply were running: this one starts from an empty cache
    fresh = list(backend.generate_ids(prompt2, second_turn.params))
    assert backend.last_reused_tokens == 0 and fresh == reused
    backend._prefixes.checkin(kept)
    stream = backend.generate_ids(prompt2, second_turn.params)
    next(stream)  # left running, never closed (a listener gone away): the next reply still works, from empty
    assert list(backend.generate_ids(prompt2, second_turn.params)) == reused and backend.last_reused_tokens == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bfloat16_stream(model_dir):
    gpu = HFChatBackend.load(model_dir, device="cuda", dtype="auto")
    assert gpu.device.startswith("cuda") and gpu.model.dtype in (torch.bfloat16, torch.float16)
    request = _request(temperature=0.0, repetition_penalty=1.0)
    deltas = list(gpu.stream(request))
    assert deltas and list(gpu.generate_ids(gpu.prompt_ids(request), request.params))
    assert gpu.last_reused_tokens == len(gpu.prompt_ids(request)) - 1  # the prefix cache works on CUDA too
