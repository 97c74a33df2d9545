"""Stage 3: one explanation per latent, stored with its prompt, raw answer and token counts."""
from __future__ import annotations

import time

from lantern.config import RunConfig
from lantern.explain.default import build_request, parse_explanation
from lantern.io import write_parquet
from lantern.llm.base import LLMClient
from lantern.models.loading import load_tokenizer
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import EXPLANATIONS, records_file
from lantern.pipeline.records_stage import coder_names


def run_explain(cfg: RunConfig, client: LLMClient, tokenizer=None) -> dict:
    started = time.perf_counter()
    tokenizer = tokenizer or load_tokenizer(cfg.model)
    jobs, requests = [], []
    for coder in coder_names(cfg):
        for latent, examples in sorted(examples_by_latent(records_file(cfg.path, coder)).items()):
            explain = [e for e in examples if e["split"] == "explain"]
            latent_max = max(e["max_activation"] for e in explain)
            jobs.append((coder, latent))
            requests.append(build_request(tokenizer, explain, cfg.explainer, latent_max))
    responses = complete_all(client, requests, "explain")
    rows = []
    for (coder, latent), request, response in zip(jobs, requests, responses):
        explanation = parse_explanation(response.text) if response.ok else None
        rows.append({
            "coder": coder, "latent": latent, "explanation": explanation, "failed": explanation is None,
            "error": response.error or (None if explanation else "unparsable answer"),
            "raw_answer": response.text, "prompt": request.prompt, "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens, "cached": response.cached,
            "llm": f"{client.backend}:{client.model_id}",
        })
    write_parquet(cfg.path / EXPLANATIONS, rows)
    return {"seconds": time.perf_counter() - started, "explained": sum(not r["failed"] for r in rows),
            "failed": sum(r["failed"] for r in rows)}
