"""A reduced `lantern validate` with the real embedded judge (Qwen2.5-Coder-1.5B-Instruct through llama.cpp): on
four planted rules, detection with the TRUE explanations must rank the windows clearly better than with SHUFFLED
ones. This is the check that lantern's default LLM can tell a right explanation from a wrong one; it runs the real
cache, records and score stages (the tiny subject model only tokenizes: planted latents read token ids)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lantern.coders.planted import RULES
from lantern.config import LLMConfig
from lantern.llm.factory import make_client
from lantern.models.loading import load_subject_model
from lantern.pipeline.cache_stage import run_cache
from lantern.pipeline.records_stage import run_records
from lantern.validate.flow import latent_statuses, score_variant, validation_config
from lantern.validate.variants import variant_explanations

RULE_KEYS = ("digits", "the", "and", "colons")


@pytest.mark.slow
def test_the_embedded_judge_separates_true_from_shuffled_explanations(tmp_path, model_dir):
    subject = load_subject_model(str(model_dir))
    cfg = validation_config(tmp_path / "run", str(model_dir), "embedded", 32_768, LLMConfig(), ["detection"])
    cfg.records = replace(cfg.records, n_negatives=6, n_neighbour_negatives=0)
    cfg.save()
    run_cache(cfg, subject)
    run_records(cfg)
    scored = {s.latent for s in latent_statuses(cfg) if s.status == "scored"}
    chosen = [i for i, rule in enumerate(RULES) if rule.key in RULE_KEYS and i in scored]
    assert len(chosen) == len(RULE_KEYS)
    texts = variant_explanations({i: r.explanation for i, r in enumerate(RULES)}, chosen)
    client = make_client(cfg.llm, cfg.path)
    try:
        auroc = {variant: [r["auroc"] for r in score_variant(cfg, client, subject.tokenizer, subject, variant,
                                                             texts[variant])]
                 for variant in ("true", "shuffled")}
    finally:
        client.close()
    true, shuffled = float(np.mean(auroc["true"])), float(np.mean(auroc["shuffled"]))
    assert true > 0.75 and true > shuffled + 0.15, auroc
