"""Real run directories for tests/test_analysis*.py: the whole pipeline (cache, records, explain, score, summary)
on the tiny Gemma 3 of conftest, which is also the in-process LLM: it writes the explanations (noise, as a random
model does); the embedding scorer reads its hidden states. (The intervention scorer is left out: on 20 latents
it ran past 14 minutes on this loaded 2-core machine; tests/test_analysis.py writes its rows as it does.)
Its yes/no answers are unreadable (no yes/no among its top tokens), so a scripted judge answers the detection and
fuzzing prompts with a pseudo-random P(yes) per prompt: the analyses are tested on what the run files hold, not on
any scorer's judgement."""
from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

from conftest import TINY_HIDDEN, write_sparsify_folder
from lantern.coders.base import safe_name
from lantern.config import LLMConfig, RunConfig
from lantern.explain.settings import ExplainerConfig
from lantern.llm.base import Capabilities, LLMClient, Request, Response
from lantern.llm.factory import make_client
from lantern.llm.response_cache import CachedClient
from lantern.models.loading import load_subject_model
from lantern.pipeline.cache_stage import run_cache
from lantern.pipeline.explain_stage import run_explain
from lantern.pipeline.records_stage import run_records
from lantern.pipeline.score_stage import run_score
from lantern.records.build import RecordConfig
from lantern.score.settings import ScorerConfig
from lantern.summary import summarise

RECORDS = RecordConfig(ctx_len=12, tokens_before=6, n_explain=6, n_test_per_decile=1, n_negatives=4,
                       n_similar_negatives=0, n_neighbour_negatives=0, min_windows=16)
SAE_LATENTS = 48
LATENTS = 5
SCORERS = ["detection", "fuzzing", "embedding"]


class Judge(LLMClient):
    """Yes/no questions answered by a scripted judge; prompt log-probs by the real model behind `inner`."""

    backend, model_id = "scripted+transformers", "judge"
    capabilities = Capabilities(logprobs=True, prompt_logprobs=True)

    def __init__(self, inner: LLMClient):
        self.inner = inner

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        real = [r for r in batch if r.prompt_logprobs]
        answered = iter(await self.inner.acomplete(real) if real else [])
        out = []
        for r in batch:
            if r.prompt_logprobs:
                out.append(next(answered))
                continue
            p = 0.05 + 0.9 * int(hashlib.sha256(r.prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            out.append(Response(text=" yes" if p >= 0.5 else " no", prompt_tokens=len(r.prompt) // 4,
                                completion_tokens=1, first_token_logprobs={" yes": math.log(p),
                                                                           " no": math.log(1 - p)}))
        return out


def coder_specs(root) -> list[str]:
    """Two sparsify SAEs of the same width at layers 1 and 2 (cross-layer overlap), raw and top-16 neurons of
    layer 2 (SAE vs neurons)."""
    specs = []
    for layer in (1, 2):
        folder = Path(root) / f"coder{layer}" / f"layers.{layer}"
        if not folder.exists():
            write_sparsify_folder(folder, TINY_HIDDEN, SAE_LATENTS, k=6, seed=layer)
        specs.append(str(folder))
    return specs + ["neurons", "neurons-topk:16"]


def build_run(run_dir, model_dir, coders: list[str], sampling: str = "top",
              cache_from: Path | None = None, subject=None) -> RunConfig:
    """A finished run. `cache_from`: reuse another run's cache of these coders (the tokens and the coders' folders
    named by `coders`' cache names), as a researcher does who redraws the records with another explain sampling."""
    cfg = RunConfig(run_dir=str(run_dir), model=str(model_dir), coders=coders, layer=2, tokens=4096, seq_len=128,
                    latents=LATENTS, scorers=SCORERS,
                    records=RecordConfig(**{**RECORDS.__dict__, "explain_sampling": sampling}),
                    explainer=ExplainerConfig(max_tokens=16), llm=LLMConfig(model=str(model_dir), batch_size=16),
                    # few bootstrap resamples, and the embedding scorer pools the first block (the cheapest)
                    scoring=ScorerConfig(bootstrap_resamples=200, embedding_layer=0))
    cfg.save()
    subject = subject or load_subject_model(str(model_dir))
    if cache_from is None:
        run_cache(cfg, subject)
    else:
        names = [safe_name(Path(spec).name) for spec in coders]
        shutil.copytree(Path(cache_from) / "cache", cfg.path / "cache",
                        ignore=lambda d, entries: [e for e in entries if Path(d) == Path(cache_from) / "cache"
                                                   and (Path(d) / e / "manifest.json").exists() and e not in names])
    run_records(cfg)
    client = make_client(cfg.llm, cfg.path, subject)
    try:
        times = {"explain": run_explain(cfg, client, subject.tokenizer, subject=subject)["seconds"]}
        judge = CachedClient(Judge(client.inner), cfg.path / "llm_cache.sqlite")
        times["score"] = run_score(cfg, judge, subject.tokenizer, subject=subject)["seconds"]
    finally:
        client.close()
    summarise(cfg, times)
    return cfg
