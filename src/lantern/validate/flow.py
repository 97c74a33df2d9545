"""`lantern validate`: the real pipeline on planted latents, scored with TRUE, SHUFFLED and RANDOM
explanations that we write instead of an LLM. The stages are the ones `lantern run` uses (cache, records,
score); only the explain stage is replaced, so what is measured is the scorers and the LLM that answers them.

Each variant's explanations go to explanations.parquet and its scores are kept as
`validate/<variant>.{explanations,scores,examples}.parquet`; TRUE is scored last, so the run directory ends
in the state a normal run with perfect explanations would have."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from lantern.cache.reader import LatentCache
from lantern.coders.planted import RULES
from lantern.config import CONFIG_FILE, LLMConfig, RunConfig
from lantern.configure import refuse_conflicts, with_llm_options
from lantern.errors import LanternError
from lantern.io import write_json, write_parquet
from lantern.llm.base import LLMClient
from lantern.pipeline.files import CACHE, EXAMPLES, EXPLANATIONS, SCORES, latents_file, records_file
from lantern.pipeline.orchestrator import Pipeline
from lantern.records.build import RecordConfig
from lantern.score.registry import get_scorer
from lantern.validate.report import LatentStatus, Report, cell, markdown, metrics_of, verdict
from lantern.validate.variants import VARIANTS, explanation_rows, variant_explanations

CODER = "planted"
DEFAULT_TOKENS = 32_768
OUT = "validate"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"

RECORDS = RecordConfig(ctx_len=12, tokens_before=6, n_explain=0, n_test_per_decile=1, n_negatives=12,
                       n_similar_negatives=0, n_neighbour_negatives=4, min_windows=20)
"""Short windows: a negative must be zero on its window and the windows beside it, and dense rules
(capitals, "the") fire in most 32-token windows. Nothing is explained, so no explain windows; a coder that
reads token ids has no window index, so no `similar` negatives."""


def validation_config(run_dir: Path, model: str, corpus: str, tokens: int, llm: LLMConfig | dict | None = None,
                      scorers: list[str] | None = None, seed: int = 0) -> RunConfig:
    """A new planted run, or the saved one of `run_dir` (which must be a planted run of the same model,
    corpus and size: its cache and records were made with those). `llm`: the LLM settings, or the command's LLM
    options (None values: not given) applied to the run's saved settings or to the defaults."""
    options = {} if llm is None or isinstance(llm, LLMConfig) else llm
    if (Path(run_dir) / CONFIG_FILE).exists():
        cfg = RunConfig.load(run_dir)
        refuse_conflicts(cfg, {"coders": [CODER], "model": model, "corpus": corpus, "tokens": tokens, "seed": seed},
                         "Use another --run-dir for a validation run")
        cfg.llm = llm if isinstance(llm, LLMConfig) else with_llm_options(cfg.llm, **options)
    else:
        cfg = RunConfig(run_dir=str(run_dir), model=model, corpus=corpus, coders=[CODER], tokens=tokens,
                        latents=len(RULES), seed=seed, records=replace(RECORDS, seed=seed),
                        llm=llm if isinstance(llm, LLMConfig) else with_llm_options(LLMConfig(), **options))
    if scorers is not None:
        cfg.scorers = list(scorers)
    if tokens < cfg.seq_len:
        raise LanternError(f"--tokens {tokens} is less than one sequence of {cfg.seq_len} tokens")
    return cfg


def latent_statuses(cfg: RunConfig) -> list[LatentStatus]:
    """Which planted latents can be scored: those with records that hold test positives and negatives."""
    cache = LatentCache(cfg.path / CACHE, CODER)
    rows = pq.read_table(records_file(cfg.path, CODER), columns=["latent", "split", "kind"]).to_pylist()
    positives = {r["latent"] for r in rows if r["split"] == "test" and r["kind"] == "activating"}
    negatives = {r["latent"] for r in rows if r["split"] == "test" and r["kind"] == "negative"}
    recorded = {r["latent"] for r in rows}
    summary = latents_file(cfg.path, CODER)
    sampled = set(pq.read_table(summary, columns=["latent"]).column("latent").to_pylist()) if summary.exists() \
        else set(range(len(RULES)))
    out = []
    for latent, rule in enumerate(RULES):
        count = int(cache.counts[latent])
        status, note = "scored", ""
        if latent not in sampled and count > 0 and len(sampled) >= cfg.latents:  # the sample was full
            status, note = "no records", f"not among the {cfg.latents} latents sampled"
        elif latent not in recorded:
            status = "no records"
            note = (f"never fires in {cache.manifest['n_tokens_cached']} tokens" if count == 0 else
                    f"fewer than {cfg.records.windows_needed} disjoint windows of {cfg.records.ctx_len} tokens")
        elif latent not in positives:
            status, note = "no records", "no activating test windows"
        elif latent not in negatives:
            status, note = "no negatives", f"no window of {cfg.records.ctx_len} tokens where it is zero"
        out.append(LatentStatus(latent, rule.key, rule.explanation, count, status, note))
    return out


def score_variant(cfg: RunConfig, client: LLMClient | None, tokenizer, subject, variant: str,
                  explanations: dict[int, str], pipeline: Pipeline | None = None) -> list[dict]:
    """Write this variant's explanations, run the real score stage, keep its files under validate/."""
    out = cfg.path / OUT
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(cfg.path / EXPLANATIONS, explanation_rows(CODER, variant, explanations))
    (pipeline or Pipeline(cfg, subject=subject, client=client)).score()
    for name in (EXPLANATIONS, SCORES, EXAMPLES):
        shutil.copyfile(cfg.path / name, out / f"{variant}.{name}")
    return pq.read_table(cfg.path / SCORES).to_pylist()


def run_validation(cfg: RunConfig, client: LLMClient | None = None, subject=None,
                   variants: tuple[str, ...] = VARIANTS, pipeline: Pipeline | None = None,
                   rules: tuple[int, ...] | None = None) -> Report:
    """Cache, records, then scoring with every variant, through the same pipeline `lantern run` uses (`client`
    and `subject`: already loaded, else the pipeline loads them); writes validate/summary.{json,md}. `rules`:
    the planted latents to score (None: all); the others are listed as not chosen."""
    started = time.perf_counter()
    pipeline = pipeline or Pipeline(cfg, subject=subject, client=client)
    cfg.save()
    pipeline.load_subject()
    pipeline.cache()
    pipeline.records()
    statuses = latent_statuses(cfg)
    if rules is not None:
        statuses = [s if s.latent in rules or s.status != "scored" else replace(s, status="not chosen",
                                                                               note="not in --rules")
                    for s in statuses]
    scored = [s.latent for s in statuses if s.status == "scored"]
    if not scored:
        raise LanternError(f"no planted latent got records with positives and negatives in {cfg.tokens} tokens"
                           f"{' among the --rules chosen' if rules is not None else ''}; cache more tokens (--tokens)")
    texts = variant_explanations({i: r.explanation for i, r in enumerate(RULES)}, scored,
                                 {i: r.partial for i, r in enumerate(RULES)})
    rows: dict[str, list[dict]] = {}
    for variant in reversed(variants):  # TRUE last: the run directory ends with the true explanations scored
        rows[variant] = [r for r in score_variant(cfg, None, None, None, variant, texts[variant], pipeline)
                         if r["latent"] in scored]  # a resumed run's scores of rules not chosen this time
    report = build_report(cfg, statuses, texts, rows)
    if rules is not None:
        report.settings["rules"] = [RULES[i].key for i in rules]
    llm = pipeline.llm()
    report.settings.update({"seconds": {**pipeline.seconds, "total": time.perf_counter() - started},
                            "llm": f"{llm.backend}:{llm.model_id}" if llm is not None else None})
    write_outputs(cfg, report)
    return report


def build_report(cfg: RunConfig, statuses: list[LatentStatus], texts: dict[str, dict[int, str]],
                 rows: dict[str, list[dict]]) -> Report:
    cells, verdicts, per_latent = [], [], []
    groups = {"all": lambda latent: True, "tuned": lambda latent: not RULES[latent].held_out,
              "held-out": lambda latent: RULES[latent].held_out}
    for name in cfg.scorers:
        scorer = get_scorer(name, cfg.scoring)
        mine = {variant: [r for r in rows[variant] if r["scorer"] == name] for variant in VARIANTS if variant in rows}
        for group, member in groups.items():
            chosen = {variant: [r for r in mine[variant] if member(r["latent"])] for variant in mine}
            if group != "all" and not any(chosen.values()):
                continue
            for metric in metrics_of([r for variant_rows in chosen.values() for r in variant_rows]) or [None]:
                by_variant = {variant: cell(name, variant, chosen[variant], metric, group) for variant in chosen}
                cells += by_variant.values()
                verdicts.append(verdict(scorer, by_variant))
        for variant in mine:
            per_latent += [{"latent": r["latent"], "rule": RULES[r["latent"]].key,
                            "held_out": RULES[r["latent"]].held_out, "scorer": name,
                            "variant": variant, "explanation": texts[variant].get(r["latent"]),
                            "metric": r.get("metric"), "score": r.get("score"), "auroc": r.get("auroc")}
                           for r in mine[variant]]
    settings = {"run_dir": str(cfg.path), "model": cfg.model, "corpus": cfg.corpus, "tokens": cfg.tokens,
                "scorers": cfg.scorers, "records": {"ctx_len": cfg.records.ctx_len,
                                                    "n_test_per_decile": cfg.records.n_test_per_decile,
                                                    "n_negatives": cfg.records.n_negatives,
                                                    "n_neighbour_negatives": cfg.records.n_neighbour_negatives}}
    return Report(cells, verdicts, statuses, per_latent, settings)


def write_outputs(cfg: RunConfig, report: Report) -> None:
    out = cfg.path / OUT
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY_JSON, report.to_json())
    (out / SUMMARY_MD).write_text(markdown(report))
