"""Build the run's LLM client: HTTP when a URL is given, else in-process; always behind the response cache.

In-process, the default is the embedded instruct model (Qwen2.5-Coder-1.5B-Instruct) through llama.cpp; any other
GGUF file also goes to llama.cpp; `subject` (the subject model itself), a Hugging Face directory or id go to
transformers."""
from __future__ import annotations

from pathlib import Path

from lantern.errors import LanternError
from lantern.llm.base import LLMClient
from lantern.llm.embedded import DEFAULT_LLM, EMBEDDED_LLMS, assemble, embedded_llm, is_embedded_llm
from lantern.llm.response_cache import CachedClient

RESPONSE_CACHE = "llm_cache.sqlite"


SUBJECT_LLM = "subject"
"""`--llm-model subject`: the subject model itself answers, in-process through transformers (base-model prompts)."""


def resolve_backend(llm_cfg) -> str:
    """The backend `auto` stands for: http with a URL; llama.cpp for the embedded LLMs and GGUF files;
    transformers for the subject model and Hugging Face models."""
    if llm_cfg.backend != "auto":
        return "llama.cpp" if llm_cfg.backend == "llama" else llm_cfg.backend
    if llm_cfg.url:
        return "http"
    model = llm_cfg.model or DEFAULT_LLM
    if is_embedded_llm(model) or str(model).endswith(".gguf"):
        return "llama.cpp"
    return "transformers"


def llama_client(model: str | None, n_ctx: int = 8192) -> LLMClient:
    """An embedded LLM by name (assembled on first use) or a GGUF file, in-process through llama.cpp."""
    from lantern.llm.llama_client import LlamaCppClient

    name = model or DEFAULT_LLM
    if is_embedded_llm(name):
        spec = embedded_llm(name)
        return LlamaCppClient(assemble(spec), model_id=f"{spec.name}:{spec.sha256[:16]}", n_ctx=n_ctx)
    path = Path(name)
    if not path.is_file():
        raise LanternError(f"--llm-model {name!r} is neither an embedded LLM ({', '.join(EMBEDDED_LLMS)}) nor a "
                           f"GGUF file")
    stat = path.stat()
    return LlamaCppClient(path, model_id=f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}", n_ctx=n_ctx)


def make_client(llm_cfg, run_dir: Path, subject=None) -> CachedClient:
    """`subject` (a loaded SubjectModel) is reused when `--llm-model subject` (or its own name) is asked for."""
    inner: LLMClient
    backend = resolve_backend(llm_cfg)
    if backend == "llama.cpp":
        inner = llama_client(llm_cfg.model)
    elif backend == "http":
        if not llm_cfg.url:
            raise LanternError("the http backend needs --llm-url")
        from lantern.llm.http_client import HTTPClient

        inner = HTTPClient(llm_cfg.url, llm_cfg.model or "default", api=llm_cfg.api, api_key_env=llm_cfg.api_key_env,
                           concurrency=llm_cfg.concurrency, timeout=llm_cfg.timeout,
                           prompt_logprobs=llm_cfg.prompt_logprobs, outage_wait=llm_cfg.outage_wait)
    elif backend == "vllm":
        if not llm_cfg.model:
            raise LanternError("the vllm backend needs --llm-model (a model the engine can load)")
        from lantern.llm.vllm_client import VLLMClient

        inner = VLLMClient(llm_cfg.model)
    elif backend == "transformers":
        from lantern.llm.transformers_client import TransformersClient
        from lantern.models.loading import EMBEDDED_MODEL, load_subject_model

        name = llm_cfg.model or EMBEDDED_MODEL
        if name == SUBJECT_LLM:
            if subject is None:
                raise LanternError("--llm-model subject needs the run's subject model loaded in this process")
            name = subject.name
        if subject is None or subject.name != name:
            subject = load_subject_model(name)
        inner = TransformersClient(subject.model, subject.tokenizer, model_id=name, batch_size=llm_cfg.batch_size)
    else:
        raise LanternError(f"unknown LLM backend {llm_cfg.backend!r}: use auto, llama, transformers, http or vllm")
    return CachedClient(inner, Path(run_dir) / RESPONSE_CACHE, concurrency=llm_cfg.concurrency)
