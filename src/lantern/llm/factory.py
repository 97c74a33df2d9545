"""Build the run's LLM client: HTTP when a URL is given, else in-process; always behind the response cache."""
from __future__ import annotations

from pathlib import Path

from lantern.errors import LanternError
from lantern.llm.base import LLMClient
from lantern.llm.response_cache import CachedClient

RESPONSE_CACHE = "llm_cache.sqlite"


def make_client(llm_cfg, run_dir: Path, subject=None) -> CachedClient:
    """`subject` (a loaded SubjectModel) is reused as the in-process LLM when no other model is named."""
    inner: LLMClient
    backend = llm_cfg.backend if llm_cfg.backend != "auto" else ("http" if llm_cfg.url else "transformers")
    if backend == "http":
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
        if subject is None or subject.name != name:
            subject = load_subject_model(name)
        inner = TransformersClient(subject.model, subject.tokenizer, model_id=name, batch_size=llm_cfg.batch_size)
    else:
        raise LanternError(f"unknown LLM backend {llm_cfg.backend!r}: use auto, transformers, http or vllm")
    return CachedClient(inner, Path(run_dir) / RESPONSE_CACHE, concurrency=llm_cfg.concurrency)
