"""Stage 3: explanations of every recorded latent (one row per candidate), stored with the prompt, the raw
answer, token counts and the evidence shown, by the explainer `cfg.explainer.kind` names.

Partitioned by latent range: each partition explains its latents and writes its rows of explanations.parquet
and usage/explain.parquet, which concatenate (in coder, latent order) into the stage's files."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq

from lantern.coders.loading import load_coders
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.executors import partitions, resources
from lantern.executors.base import Executor, split_ranges
from lantern.executors.local import LocalExecutor
from lantern.explain.base import Explainer, LatentEvidence, fit_to_context
from lantern.explain.evidence import from_records
from lantern.explain.registry import explainer_for
from lantern.io import write_parquet
from lantern.llm.base import LLMClient, Request, Response
from lantern.models.loading import SubjectModel, load_subject_model
from lantern.pipeline.common import complete_all, examples_by_latent
from lantern.pipeline.files import EXPLANATIONS, records_file
from lantern.pipeline.records_stage import coder_names
from lantern.pipeline.usage import usage_file, write_usage
from lantern.progress import console, progress_bar

OUTPUT_CHUNK = 32
"""Latents per output-evidence call (progress granularity)."""


def gather_evidence(cfg: RunConfig, keys: list[tuple[str, int]] | None = None) -> list[LatentEvidence]:
    """Evidence of every recorded latent, in coder then latent order (only `keys`, where given)."""
    wanted: dict[str, list[int]] | None = None
    if keys is not None:
        wanted = {}
        for coder, latent in keys:
            wanted.setdefault(coder, []).append(latent)
    return [from_records(coder, latent, rows) for coder in coder_names(cfg) if wanted is None or coder in wanted
            for latent, rows in sorted(examples_by_latent(records_file(cfg.path, coder),
                                                          None if wanted is None else wanted[coder]).items())]


def recorded_latents(cfg: RunConfig) -> list[tuple[str, int]]:
    """(coder, latent) of every recorded latent, in the order the stage's rows come in."""
    keys = []
    for coder in coder_names(cfg):
        path = records_file(cfg.path, coder)
        if path.exists():
            latents = pq.read_table(path, columns=["latent"]).column("latent").to_numpy()
            keys += [(coder, int(latent)) for latent in np.unique(latents)]
    return keys


def attach_output_evidence(cfg: RunConfig, evidence: list[LatentEvidence],
                           subject: SubjectModel | None) -> list[LatentEvidence]:
    """Logit-lens and steering evidence from the subject model and the run's coders (loaded only here)."""
    from lantern.explain.output_evidence import output_evidence

    subject = subject or load_subject_model(cfg.model)
    coders = {c.name: c for spec in cfg.coders for c in load_coders(spec, subject.model, cfg.layer)}
    found: dict[tuple[str, int], object] = {}
    with progress_bar() as bar:
        task = bar.add_task("output evidence", total=len(evidence))
        for name in dict.fromkeys(e.coder for e in evidence):
            if name not in coders:
                raise LanternError(f"the cache holds coder {name!r}, but the run's coder specs {cfg.coders} give "
                                   f"{sorted(coders)}; output evidence needs the coder's decoder directions")
            mine = [e for e in evidence if e.coder == name]
            for lo in range(0, len(mine), OUTPUT_CHUNK):
                chunk = mine[lo:lo + OUTPUT_CHUNK]
                strengths = {e.latent: e.latent_max * cfg.explainer.steering_scale for e in chunk}
                result = output_evidence(subject.model, subject.tokenizer, coders[name], strengths,
                                         cfg.explainer.top_tokens)
                found.update({(name, latent): value for latent, value in result.items()})
                bar.advance(task, len(chunk))
    return [replace(e, output=found[(e.coder, e.latent)]) for e in evidence]


def _note_missing_validation(cfg: RunConfig) -> None:
    """Say early what the records lack for choosing among candidates (the run still goes on)."""
    if cfg.explainer.candidates > 1 and not cfg.records.n_validation_per_decile:
        console.print(f"[yellow]note:[/yellow] {cfg.explainer.candidates} candidates per latent, but the records have "
                      f"no validation windows to choose among them (records.n_validation_per_decile = 0): "
                      f"`lantern score` will refuse; rebuild the records with n_validation_per_decile >= 1")


def _note_missing_negatives(cfg: RunConfig, explainer: Explainer, evidence: list[LatentEvidence]) -> None:
    """Say which latents a contrastive explainer sees without contrast (the run still goes on)."""
    without = sum(not e.negatives for e in evidence) if explainer.name == "contrastive" else 0
    if without:
        console.print(f"[yellow]note:[/yellow] {without} of {len(evidence)} latent(s) have no explain negatives "
                      f"(records.n_explain_negatives = {cfg.records.n_explain_negatives}); they are explained "
                      f"without contrast. Rebuild the records with n_explain_negatives > 0 for contrast")


def shown_prompt(request: Request, chat: bool) -> str:
    """The prompt as the LLM saw it: the chat turns (each headed by its role) for a chat backend."""
    if chat and request.messages:
        return "\n\n".join(f"[{role}]\n{content}" for role, content in request.messages)
    return request.prompt


def explanation_rows(explainer: Explainer, llm: str, evidence: list[LatentEvidence],
                     per_latent: list[list[Request]], responses: list[Response], chat: bool = False) -> list[dict]:
    """One row per candidate; `responses` answer the flattened `per_latent` requests in order."""
    answers_left = iter(responses)
    rows = []
    for e, requests in zip(evidence, per_latent):
        answers = [next(answers_left) for _ in requests]
        described = explainer.describe(e)
        if e.dropped_windows:
            described["windows_dropped_to_fit_context"] = e.dropped_windows
        shown = json.dumps(described)
        for candidate, (request, response, explanation) in enumerate(zip(requests, answers, explainer.parse(answers))):
            rows.append({
                "coder": e.coder, "latent": e.latent, "explainer": explainer.name, "candidate": candidate,
                "explanation": explanation, "failed": explanation is None,
                "error": response.error or (None if explanation else "unparsable answer"),
                "raw_answer": response.text, "prompt": shown_prompt(request, chat),
                "prompt_tokens": response.prompt_tokens,
                "completion_tokens": response.completion_tokens, "seconds": response.seconds,
                "attempts": response.attempts, "cached": response.cached, "llm": llm, "evidence": shown,
            })
    return rows


def explain_partition(cfg: RunConfig, index: int, keys: list[tuple[str, int]]) -> dict:
    """Explain the latents `keys` (a Ray task, or a call in this process) into a partition folder."""
    def write(folder):
        explainer = explainer_for(cfg.explainer)
        client = resources.llm_client(cfg)
        tokenizer = resources.tokenizer(cfg)
        evidence = gather_evidence(cfg, keys)
        if explainer.needs_output_evidence:
            evidence = attach_output_evidence(cfg, evidence, resources.subject_model(cfg))
        _note_missing_negatives(cfg, explainer, evidence)
        evidence = [fit_to_context(explainer, tokenizer, e, cfg.explainer) for e in evidence]
        per_latent = [explainer.requests(tokenizer, e, cfg.explainer) for e in evidence]
        responses = complete_all(client, [r for requests in per_latent for r in requests], "explain")
        write_usage(folder, "explain", [{"coder": e.coder, "latent": e.latent, "task": f"{explainer.name}:{candidate}"}
                                        for e, requests in zip(evidence, per_latent)
                                        for candidate in range(len(requests))], responses)
        rows = explanation_rows(explainer, f"{client.backend}:{client.model_id}", evidence, per_latent, responses,
                                chat=getattr(client, "chat", False))
        write_parquet(folder / EXPLANATIONS, rows)
        explained = {(r["coder"], r["latent"]) for r in rows if not r["failed"]}
        return {"latents": len(evidence), "explained": len(explained), "candidates": len(rows)}

    return partitions.write_partition(cfg.path, "explain", index, write)


def run_explain(cfg: RunConfig, client: LLMClient | None = None, tokenizer=None, subject: SubjectModel | None = None,
                executor: Executor | None = None) -> dict:
    """`client`, `tokenizer`, `subject`: already loaded here, used by partitions that run in this process
    (a Ray worker builds its own from the config)."""
    started = time.perf_counter()
    cfg.explainer.check()
    explainer = explainer_for(cfg.explainer)
    executor = executor or LocalExecutor()
    _note_missing_validation(cfg)
    keys = recorded_latents(cfg)
    groups = [keys[a:b] for a, b in split_ranges(len(keys), executor.partitions(len(keys)))]
    partitions.begin(cfg.path, "explain")
    with resources.provided(cfg, subject=subject, client=client, tokenizer=tokenizer):
        done = executor.map(explain_partition, [(cfg, i, group) for i, group in enumerate(groups)], "explain")
    merged = partitions.merge(cfg.path, "explain", len(groups), [EXPLANATIONS, str(usage_file("", "explain"))])
    partitions.end(cfg.path, "explain")
    explained = sum(d["explained"] for d in done)
    return {"seconds": time.perf_counter() - started, "explainer": explainer.name, "explained": explained,
            "failed": sum(d["latents"] for d in done) - explained, "candidates": sum(d["candidates"] for d in done),
            "partitions": merged}
