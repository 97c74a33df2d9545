"""Detection and fuzzing asked two ways on the same latents and the same texts: one text per prompt with a
one-token yes/no answer read from log-probs (lantern's default), and N texts per prompt answered by one list of
0/1 verdicts (`examples_per_prompt = N`; delphi's CLI default is 5 per prompt).

Reads a run directory that has records and explanations (e.g. after `lantern cache`, `lantern records`,
`lantern explain`), scores its explained latents in both modes through lantern's own scorers and queue (no
response cache, so every call is made), and reports per mode and scorer: calls, prompt and completion tokens
per latent and per scored text, wall time, answers that could not be read, balanced accuracy (pooled over texts,
95% bootstrap interval; and the mean over latents), and how the two modes agree on the texts both read:
Cohen's kappa (sklearn, 95% bootstrap interval over texts) and the share of identical verdicts.

    lantern cache --run-dir /tmp/answers-bench/run --coders sae --latents 16
    lantern records --run-dir /tmp/answers-bench/run && lantern explain --run-dir /tmp/answers-bench/run
    python benchmarks/bench_answer_formats.py /tmp/answers-bench/run --json /tmp/answers-bench/in-process.json

LLM: the run's in-process model by default (the embedded Gemma 3 270M), or any OpenAI-compatible completions
server with `--llm-url URL --llm-model NAME` (e.g. `python -m llama_cpp.server --model <gguf> --logits_all true`).
Timings are as noisy as the machine: the CPU other processes used during each arm is measured and printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import cohen_kappa_score

from lantern.config import RunConfig
from lantern.llm.base import LLMClient
from lantern.pipeline.common import examples_by_latent
from lantern.pipeline.files import EXPLANATIONS, records_file
from lantern.pipeline.score_stage import score_latents
from lantern.score.base import LatentTask, ScoreContext
from lantern.score.metrics import classification_metrics, proportion_interval
from lantern.score.registry import get_scorer

SCORERS = ("detection", "fuzzing")


def busy_seconds() -> float:
    """CPU seconds all processes have used (from /proc/stat), to tell how much others took during an arm."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_client(args, cfg: RunConfig) -> tuple[LLMClient, object]:
    """(client, tokenizer of the subject model)."""
    from lantern.models.loading import load_subject_model, load_tokenizer

    if args.llm_url:
        from lantern.llm.http_client import HTTPClient

        client = HTTPClient(args.llm_url, args.llm_model or "default", api_key_env="LANTERN_NO_KEY",
                            concurrency=args.concurrency)
        return client, load_tokenizer(cfg.model)
    from lantern.llm.transformers_client import TransformersClient

    subject = load_subject_model(cfg.model)
    return TransformersClient(subject.model, subject.tokenizer, subject.name, batch_size=cfg.llm.batch_size), \
        subject.tokenizer


def tasks_of(cfg: RunConfig, limit: int | None) -> tuple[list[LatentTask], dict]:
    explanations = [r for r in pq.read_table(cfg.path / EXPLANATIONS).to_pylist() if not r["failed"]]
    explanations = [r for r in explanations if r.get("candidate", 0) == 0][:limit]
    records = {coder: examples_by_latent(records_file(cfg.path, coder)) for coder in {r["coder"] for r in explanations}}
    tasks = [LatentTask(r["coder"], r["latent"], r["explanation"],
                        [x for x in records[r["coder"]][r["latent"]] if x["split"] == "test"]) for r in explanations]
    return tasks, records


def run_arm(client, cfg: RunConfig, tokenizer, tasks, records, per_prompt: int) -> dict:
    """Score every task with detection and fuzzing at `per_prompt` texts per prompt, timed."""
    settings = replace(cfg.scoring, examples_per_prompt=per_prompt)
    scorers = [get_scorer(name, settings) for name in SCORERS]
    context = ScoreContext(settings=settings, tokenizer=tokenizer, capabilities=client.capabilities,
                           backend=client.backend, records=records, mark_threshold=cfg.explainer.mark_threshold,
                           seed=cfg.seed)
    load_before, busy0, own0 = os.getloadavg()[0], busy_seconds(), own_seconds()
    started = time.perf_counter()
    out = score_latents(client, scorers, context, tasks, description=f"{per_prompt} per prompt")
    wall = time.perf_counter() - started
    others = max(0.0, (busy_seconds() - busy0) - (own_seconds() - own0)) / wall
    return {"per_prompt": per_prompt, "wall_s": wall, "other_cores": others,
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "scores": out.scores, "examples": out.examples,
            "usage": [{**tag, "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                       "seconds": r.seconds, "failed": not r.ok} for tag, r in zip(out.usage_tags, out.usage)]}


def summarise(arm: dict, scorer: str, n_latents: int, resamples: int) -> dict:
    examples = [e for e in arm["examples"] if e["scorer"] == scorer]
    calls = [u for u in arm["usage"] if u["task"] == scorer]
    scores = [s for s in arm["scores"] if s["scorer"] == scorer]
    prompt = sum(u["prompt_tokens"] for u in calls)
    completion = sum(u["completion_tokens"] for u in calls)
    pooled = classification_metrics([e["label"] for e in examples], [e["p_yes"] for e in examples],
                                    n_resamples=resamples)
    per_latent = np.asarray([s["balanced_accuracy"] for s in scores], dtype=float)
    per_latent = per_latent[np.isfinite(per_latent)]
    read_as: dict[str, int] = {}
    for e in examples:
        read_as[e["read_as"]] = read_as.get(e["read_as"], 0) + 1
    return {"latents": n_latents, "texts": len(examples), "calls": len(calls),
            "calls_per_latent": len(calls) / n_latents,
            "prompt_tokens_per_latent": prompt / n_latents, "completion_tokens_per_latent": completion / n_latents,
            "tokens_per_text": (prompt + completion) / max(1, len(examples)),
            "llm_seconds": float(sum(u["seconds"] for u in calls)),
            "failed_calls": sum(u["failed"] for u in calls), "failed_answers": pooled["n_failed"],
            "read_as": read_as, "said_yes": sum(e["prediction"] == 1 for e in examples),
            "balanced_accuracy": pooled["balanced_accuracy"],
            "balanced_accuracy_ci": [pooled["balanced_accuracy_ci_low"], pooled["balanced_accuracy_ci_high"]],
            "auroc": pooled["auroc"], "balanced_accuracy_mean_over_latents": float(per_latent.mean())
            if len(per_latent) else float("nan"), "latents_with_balanced_accuracy": int(len(per_latent))}


def agreement(one: dict, many: dict, scorer: str, resamples: int, seed: int = 0) -> dict:
    """Cohen's kappa and the share of identical verdicts on the texts both modes read."""
    key = lambda e: (e["coder"], e["latent"], e["start"], e["variant"])  # noqa: E731
    a = {key(e): e["prediction"] for e in one["examples"] if e["scorer"] == scorer}
    b = {key(e): e["prediction"] for e in many["examples"] if e["scorer"] == scorer}
    assert a.keys() == b.keys(), "the two modes scored different texts"
    both = [k for k in a if a[k] is not None and b[k] is not None]
    x, y = np.asarray([a[k] for k in both]), np.asarray([b[k] for k in both])
    if not both:
        return {"n": 0, "kappa": float("nan"), "kappa_ci": [float("nan")] * 2, "same": float("nan"),
                "same_ci": [float("nan")] * 2}
    kappa = float(cohen_kappa_score(x, y)) if len(set(x) | set(y)) > 1 else float("nan")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i]) | set(y[i])) > 1:
            draws.append(cohen_kappa_score(x[i], y[i]))
    draws = np.asarray([d for d in draws if np.isfinite(d)])
    same = x == y
    return {"n": len(both), "n_only_one_read": sum((a[k] is None) != (b[k] is None) for k in a),
            "kappa": kappa, "kappa_ci": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]
            if len(draws) else [float("nan")] * 2,
            "same": float(same.mean()), "same_ci": list(proportion_interval(same, resamples)),
            "yes_one_token": int(x.sum()), "yes_list": int(y.sum())}


def fmt(value: float, ci=None, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:.{digits}f}"
    if ci is not None and all(np.isfinite(c) for c in ci):
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def table(result: dict) -> str:
    lines = ["| scorer | texts / prompt | calls / latent | prompt tok. / latent | completion tok. / latent | "
             "tokens / text | wall (both scorers) | failed answers | said yes | balanced acc. (pooled, 95% CI) | "
             "mean over latents | AUROC (pooled) |", "|" + "---|" * 12]
    for scorer in SCORERS:
        for arm in result["arms"]:
            s = arm["summary"][scorer]
            lines.append(f"| {scorer} | {arm['per_prompt']} | {s['calls_per_latent']:.1f} | "
                         f"{s['prompt_tokens_per_latent']:,.0f} | {s['completion_tokens_per_latent']:,.1f} | "
                         f"{s['tokens_per_text']:.1f} | {arm['wall_s']:.0f} s | "
                         f"{s['failed_answers']} of {s['texts']} | "
                         f"{s['said_yes']} | {fmt(s['balanced_accuracy'], s['balanced_accuracy_ci'])} | "
                         f"{fmt(s['balanced_accuracy_mean_over_latents'])} (n={s['latents_with_balanced_accuracy']}) | "
                         f"{fmt(s['auroc'])} |")
    lines += ["", "| scorer | texts both read | Cohen's kappa (95% CI) | same verdict (95% CI) | "
                  "read by one mode only |",
              "|---|---|---|---|---|"]
    for scorer in SCORERS:
        g = result["agreement"][scorer]
        lines.append(f"| {scorer} | {g['n']} | {fmt(g['kappa'], g['kappa_ci'])} | "
                     f"{fmt(100 * g['same'], [100 * c for c in g['same_ci']], 1)}% | {g.get('n_only_one_read', 0)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--per-prompt", type=int, default=5, help="texts per prompt of the list mode")
    parser.add_argument("--latents", type=int, default=None, help="score only the first N explained latents")
    parser.add_argument("--llm-url", default=None)
    parser.add_argument("--llm-model", default=None)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", default=None, help="write everything (per-text rows included) here")
    args = parser.parse_args()

    cfg = RunConfig.load(args.run_dir)
    tasks, records = tasks_of(cfg, args.latents)
    client, tokenizer = make_client(args, cfg)
    arms = []
    try:
        for per_prompt in (1, args.per_prompt):
            arm = run_arm(client, cfg, tokenizer, tasks, records, per_prompt)
            arm["summary"] = {s: summarise(arm, s, len(tasks), args.resamples) for s in SCORERS}
            arms.append(arm)
    finally:
        client.close()
    result = {"run_dir": str(cfg.path), "llm": args.llm_url or f"in-process {cfg.model}", "latents": len(tasks),
              "cpu_count": os.cpu_count(), "arms": arms,
              "agreement": {s: agreement(arms[0], arms[1], s, args.resamples) for s in SCORERS}}
    for arm in arms:
        print(f"{arm['per_prompt']} per prompt: wall {arm['wall_s']:.0f} s, other processes used "
              f"{arm['other_cores']:.2f} cores on average, load {arm['load_before']:.1f} -> {arm['load_after']:.1f}")
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main()
