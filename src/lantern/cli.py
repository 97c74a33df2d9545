"""The `lantern` command: one subcommand per stage, and `run` to chain them."""
from __future__ import annotations

import functools
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lantern.config import CONFIG_FILE, LLMConfig, RunConfig, with_llm_options, with_settings
from lantern.errors import LanternError
from lantern.validate.variants import VARIANTS, parse_variants

app = typer.Typer(add_completion=False, help="Explain and score sparse-coder latents with LLMs.",
                  pretty_exceptions_enable=False)
console = Console(stderr=True)


def clear_errors(fn):
    """Bad input ends with one red line and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LanternError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2)

    return wrapper


RunDir = typer.Option(None, "--run-dir", help="Run directory (default: runs/<timestamp>).")


def locked(new_run: str | None = None):
    """Hold the run directory's lock (pipeline/lock.py) for the whole command, so a second command on the same
    directory refuses; a disk that fills up mid-command ends with one clear line. A command that may start a new
    run (`new_run`: its name prefix) gets its default directory runs/<new_run>-<timestamp> here, locked too."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from lantern.io import as_disk_full, remove_stale_temp
            from lantern.pipeline.lock import run_lock

            if kwargs.get("repair") and kwargs.get("run_dir") is None:
                raise LanternError("--repair needs --run-dir: the run whose cache to check and repair")
            if kwargs.get("run_dir") is None and new_run:
                kwargs["run_dir"] = Path("runs") / datetime.now().strftime(f"{new_run}-%Y%m%d-%H%M%S")
            run_dir = Path(kwargs["run_dir"])
            if not new_run and not run_dir.is_dir():
                return fn(*args, **kwargs)  # not a run directory: the command says so, and creates nothing

            def note(old: dict) -> None:
                removed = remove_stale_temp(run_dir)
                console.print(f"[yellow]note:[/yellow] took over the lock of pid {old.get('pid')} on "
                              f"{old.get('host')}, which ended without releasing it (killed?); its finished work is "
                              f"reused" + (f", {removed} half-written temp file(s) it left were removed" if removed
                                           else ""))

            try:
                with run_lock(run_dir, on_takeover=note):
                    return fn(*args, **kwargs)
            except Exception as err:
                full = as_disk_full(err, run_dir)
                if full is None:
                    raise
                raise full from err

        return wrapper

    return decorate


def _new_config(run_dir: Optional[Path], llm: dict, **settings) -> RunConfig:
    """A new run's config, or the saved one of an existing run directory. Asking an existing run for another
    model, corpus, coder set, ... is refused: its cache and records were made with the saved settings."""
    settings["coders"] = [c.strip() for c in settings["coders"].split(",") if c.strip()]
    run_dir = run_dir or Path("runs") / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    if (run_dir / CONFIG_FILE).exists():
        cfg = RunConfig.load(run_dir)
        defaults = RunConfig(run_dir=str(run_dir))
        conflicts = [f"--{key.replace('_', '-')} {value!r} (the run has {getattr(cfg, key)!r})"
                     for key, value in settings.items() if value != getattr(defaults, key) and value != getattr(cfg, key)]
        if conflicts:
            raise LanternError(f"{run_dir} is an existing run made with other settings: {'; '.join(conflicts)}. "
                               f"Use another --run-dir for a new run")
        cfg.llm = with_llm_options(cfg.llm, **llm)
        return cfg
    return RunConfig(run_dir=str(run_dir), llm=with_llm_options(LLMConfig(), **llm), **settings)


def _llm_options(url=None, model=None, api=None, key_env=None, backend=None, concurrency=None, prompt_logprobs=None,
                 outage_wait=None) -> dict:
    """The command's LLM options by LLMConfig field (None: not given)."""
    return {"url": url, "model": model, "api": api, "api_key_env": key_env, "backend": backend,
            "concurrency": concurrency, "prompt_logprobs": prompt_logprobs, "outage_wait": outage_wait}


def _set_explainer(cfg: RunConfig, explainer: Optional[str], candidates: Optional[int],
                   records_pending: bool) -> None:
    """Apply --explainer / --candidates to the config (explanations can be redone with another explainer at any
    time). Records about to be built get what the explainer needs if they would lack it: explain negatives for
    a contrastive explainer, validation windows (to choose among candidates) for more than one candidate."""
    from dataclasses import replace

    from lantern.explain.contrastive import DEFAULT_NEGATIVES
    from lantern.explain.registry import explainer_for, get_explainer

    if explainer is not None:
        get_explainer(explainer)
    cfg.explainer = replace(cfg.explainer, kind=explainer or cfg.explainer.kind,
                            candidates=cfg.explainer.candidates if candidates is None else candidates)
    cfg.explainer.check()
    if records_pending and explainer_for(cfg.explainer).name == "contrastive" and not cfg.records.n_explain_negatives:
        cfg.records = replace(cfg.records, n_explain_negatives=DEFAULT_NEGATIVES)
    if records_pending and cfg.explainer.candidates > 1 and not cfg.records.n_validation_per_decile:
        cfg.records = replace(cfg.records, n_validation_per_decile=1)


def _set_scorers(cfg: RunConfig, scorers: Optional[str], intervention_kl: Optional[str] = None,
                 examples_per_prompt: Optional[int] = None) -> None:
    """Apply --scorers, --intervention-kl and --examples-per-prompt (checked before any model is loaded);
    scores can be redone with other scorers any time."""
    import dataclasses

    from lantern.score.registry import parse_scorers

    if scorers is not None:
        cfg.scorers = parse_scorers(scorers)
    if intervention_kl is not None:
        try:
            targets = tuple(float(x) for x in intervention_kl.split(",") if x.strip())
        except ValueError:
            raise LanternError(f"--intervention-kl takes comma-separated numbers (nats), not {intervention_kl!r}") from None
        cfg.scoring = dataclasses.replace(cfg.scoring, intervention_targets=targets)
    if examples_per_prompt is not None:
        cfg.scoring = dataclasses.replace(cfg.scoring, examples_per_prompt=examples_per_prompt)
    cfg.scoring.check()


def _load(run_dir: Path) -> RunConfig:
    if not (run_dir / CONFIG_FILE).exists():
        raise LanternError(f"{run_dir} is not a lantern run directory (no {CONFIG_FILE}); start with `lantern cache`")
    return RunConfig.load(run_dir)


ModelOpt = typer.Option("embedded", "--model", help="`embedded` (Gemma 3 270M), a local directory or a hub id.")
CorpusOpt = typer.Option("embedded", "--corpus", help="`embedded`, text/jsonl/parquet file or folder, or a dataset name.")
CodersOpt = typer.Option("sae,neurons,neurons-topk", "--coders", help=(
    "Comma list of: sae (the shipped SAE at layer 6), neurons (MLP neurons at --layer), neurons-topk[:K] (neurons "
    "kept to the K strongest per token, default 32), random[:N[:K]] (N random directions, a control), planted "
    "(latents with known rules, as `validate` uses), or a folder of a sparsify or SAELens checkpoint; a folder "
    "with several hookpoints takes PATH:HOOK to pick one."))
LayerOpt = typer.Option(6, "--layer", help="Layer of the neuron coders.")
TokensOpt = typer.Option(65_536, "--tokens", help="Tokens to cache.")
LatentsOpt = typer.Option(3, "--latents", help="Latents to explain and score per coder (3 keeps the default run "
                                                "under 15 min on 2 CPU cores with the embedded 1.5B model).")
SeedOpt = typer.Option(0, "--seed", help="Seed of every random choice (latents sampled, windows drawn, negatives, "
                                          "shuffled baselines): the same seed gives the same run.")
BatchOpt = typer.Option(16, "--batch-size", help="Sequences per forward pass when caching.")
DtypeOpt = typer.Option("float16", "--value-dtype", help="Cached activation precision: float16 or bfloat16.")
RunMbOpt = typer.Option(64.0, "--run-mb", help="Cache writer memory per coder (MB) before a sorted run is spilled.")
UrlOpt = typer.Option(None, "--llm-url", help="OpenAI-compatible server URL (vLLM, llama.cpp, Ollama, OpenRouter); "
                                            "several, comma-separated, share the calls.")
LLMModelOpt = typer.Option(None, "--llm-model", help="Model name on the server; in-process: embedded (Qwen2.5-Coder-"
                           "1.5B-Instruct via llama.cpp, the default), embedded-0.5b, a .gguf file, subject (the "
                           "subject model itself) or a Hugging Face directory or id.")
ApiOpt = typer.Option(None, "--llm-api", help="completions or chat (default: the run's, else completions; HTTP "
                                              "servers only).")
KeyOpt = typer.Option(None, "--llm-key-env", help="Environment variable that holds the API key (default: the "
                                                  "run's, else OPENAI_API_KEY; HTTP servers only).")
BackendOpt = typer.Option(None, "--llm-backend", help="auto (http with --llm-url; llama.cpp for embedded LLMs and "
                                                        ".gguf files; else transformers), llama, transformers, "
                                                        "http or vllm (offline engine, GPU machines); default auto.")
ConcurrencyOpt = typer.Option(None, "--llm-concurrency", help="LLM calls in flight at once, a server's capacity "
                                                              "(default: the run's, else 8; HTTP servers only).")
PromptLpOpt = typer.Option(None, "--llm-prompt-logprobs/--no-llm-prompt-logprobs",
                           help="The server returns prompt log-probs via `echo` (HTTP completions servers only).")
SetOpt = typer.Option(None, "--set", help="Change one setting, section.name=value (repeatable); sections records, "
                                          "explainer, scoring; e.g. --set records.n_test_per_decile=2 --set "
                                          "records.explain_sampling=quantiles --set explainer.show_activations=true. "
                                          "Records settings only before records are built.")
WaitOpt = typer.Option(None, "--llm-wait", help="Seconds to wait, in all, for a server that went away mid-run to "
                                                "come back before stopping (default: the run's, else 300).")
ExplainerOpt = typer.Option(None, "--explainer", help="default, activations, cot, contrastive, output or ensemble "
                                                      "(default: the run's explainer, else default).")
CandidatesOpt = typer.Option(None, "--candidates", help="Explanations sampled per latent (default: the run's, else 1).")
ScorersOpt = typer.Option(None, "--scorers", help="Comma list of detection, fuzzing, simulation, surprisal, embedding, "
                                                  "intruder, intervention (default: the run's, else detection,fuzzing).")
KLOpt = typer.Option(None, "--intervention-kl", help="Target next-token KL divergences (nats) the intervention scorer "
                                                     "steers each latent to, comma-separated (default 0.5,1,3).")
PerPromptOpt = typer.Option(None, "--examples-per-prompt", help="Detection/fuzzing texts per prompt: 1 = one-token "
                                                               "answers read from log-probs (default), N = one list "
                                                               "of N 0/1 verdicts per prompt.")


ExecutorOpt = typer.Option("local", "--executor", help="Where partitions run: local (this process) or ray.")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray cluster address (default with --executor ray: start a "
                                                         "local Ray).")
PartitionsOpt = typer.Option(0, "--partitions", help="Partitions per stage (0: 1 locally, 2 per CPU on Ray).")


def _executor(kind: str, address: Optional[str], partitions: int):
    """The executor for this command (never saved: scheduling does not change what a run computes)."""
    from lantern.executors.base import ExecutorConfig, make_executor

    if address and kind != "ray":
        raise LanternError("--ray-address needs --executor ray")
    if partitions < 0:
        raise LanternError(f"--partitions must be 0 (automatic) or more, not {partitions}")
    return make_executor(ExecutorConfig(kind=kind, address=address, partitions=partitions))


@app.command()
@clear_errors
@locked(new_run="run")
def cache(run_dir: Optional[Path] = RunDir, model: str = ModelOpt, corpus: str = CorpusOpt, coders: str = CodersOpt,
          layer: int = LayerOpt, tokens: int = TokensOpt, latents: int = LatentsOpt, seed: int = SeedOpt,
          batch_size: int = BatchOpt, value_dtype: str = DtypeOpt, run_mb: float = RunMbOpt,
          executor: str = ExecutorOpt, ray_address: Optional[str] = RayAddressOpt, partitions: int = PartitionsOpt,

          repair: bool = typer.Option(False, "--repair", help="Check every shard of the run's finished cache against "
                                                              "its checksums and recompute only the damaged ones.")):
    """Tokenize the corpus and cache the coders' sparse activations (resumable)."""
    from lantern.pipeline.cache_stage import run_cache

    if repair:
        return _repair(run_dir)

    cfg = _new_config(run_dir, {}, model=model, corpus=corpus, coders=coders, layer=layer, tokens=tokens,
                      latents=latents, seed=seed, batch_size=batch_size, value_dtype=value_dtype, run_mb=run_mb)
    cfg.save()
    runner = _executor(executor, ray_address, partitions)
    try:
        result = run_cache(cfg, executor=runner)
    finally:
        runner.close()
    console.print(f"cached {result['n_tokens']} tokens in {result['seconds']:.0f}s → {cfg.path / 'cache'}")


def _repair(run_dir: Path) -> None:
    from lantern.pipeline.repair_stage import run_repair

    report = run_repair(_load(run_dir))
    if not report.damaged:
        console.print(f"all {report.shards_total} cache shards match their checksums: nothing to repair")
        return
    for d in report.damaged:
        console.print(f"damaged: {d.coder} shard {d.shard} (latents {d.latents[0]}..{d.latents[1] - 1}): "
                      f"{d.reason.split('; ')[0]}")
    console.print(f"repaired {len(report.damaged)} of {report.shards_total} shards in {report.seconds:.1f}s "
                  f"(forward pass {report.forward_seconds:.1f}s): {len(report.exact)} byte-identical to the "
                  f"original checksums" + (f", {len(report.replaced)} recomputed with different values (another "
                                           f"device or library version?): their checksums and statistics were "
                                           f"replaced" if report.replaced else ""))


@app.command()
@clear_errors
@locked()
def records(run_dir: Path = typer.Option(..., "--run-dir"), executor: str = ExecutorOpt,
            ray_address: Optional[str] = RayAddressOpt, partitions: int = PartitionsOpt,
            settings: Optional[list[str]] = SetOpt):
    """Build each latent's explain/test examples and verified negatives."""
    from lantern.pipeline.records_stage import run_records

    cfg = _load(run_dir)
    if settings:
        with_settings(cfg, settings, records_built=_records_built(cfg)).save()
    runner = _executor(executor, ray_address, partitions)
    try:
        result = run_records(cfg, executor=runner)
    finally:
        runner.close()
    console.print(f"records: {result['latents']} in {result['seconds']:.1f}s")


def _records_built(cfg: RunConfig) -> bool:
    from lantern.pipeline.files import RECORDS

    return any((cfg.path / RECORDS).glob("*.parquet"))


def _client_settings(cfg: RunConfig, url, llm_model, api, key_env, backend=None, concurrency=None,
                     prompt_logprobs=None, outage_wait=None) -> None:
    """Apply the command's LLM options to the run's saved LLM settings (the workers of a Ray run read them)."""
    llm = with_llm_options(cfg.llm, **_llm_options(url, llm_model, api, key_env, backend, concurrency,
                                                   prompt_logprobs, outage_wait))
    if llm != cfg.llm:
        cfg.llm = llm
        cfg.save()


def _client(cfg: RunConfig, url, llm_model, api, key_env, backend=None, concurrency=None, prompt_logprobs=None,
            subject=None, outage_wait=None):
    from lantern.llm.factory import make_client

    _client_settings(cfg, url, llm_model, api, key_env, backend, concurrency, prompt_logprobs, outage_wait)
    return make_client(cfg.llm, cfg.path, subject)


@app.command()
@clear_errors
@locked()
def explain(run_dir: Path = typer.Option(..., "--run-dir"), llm_url: Optional[str] = UrlOpt,
            llm_model: Optional[str] = LLMModelOpt, llm_api: Optional[str] = ApiOpt, llm_key_env: Optional[str] = KeyOpt, llm_backend: Optional[str] = BackendOpt,
        llm_concurrency: Optional[int] = ConcurrencyOpt, llm_prompt_logprobs: Optional[bool] = PromptLpOpt,
            explainer: Optional[str] = ExplainerOpt, candidates: Optional[int] = CandidatesOpt,
            executor: str = ExecutorOpt, ray_address: Optional[str] = RayAddressOpt, partitions: int = PartitionsOpt,
            llm_wait: Optional[float] = WaitOpt):
    """Explain every recorded latent with the LLM."""
    from lantern.pipeline.explain_stage import run_explain

    cfg = _load(run_dir)
    if explainer is not None or candidates is not None:
        _set_explainer(cfg, explainer, candidates, records_pending=False)
        cfg.save()
    runner = _executor(executor, ray_address, partitions)
    client = None
    try:
        if runner.name == "local":
            client = _client(cfg, llm_url, llm_model, llm_api, llm_key_env, llm_backend, llm_concurrency,
                             llm_prompt_logprobs, outage_wait=llm_wait)
        else:  # the workers build their own clients from the saved LLM settings
            _client_settings(cfg, llm_url, llm_model, llm_api, llm_key_env, llm_backend, llm_concurrency,
                             llm_prompt_logprobs, outage_wait=llm_wait)
        result = run_explain(cfg, client, executor=runner)
    finally:
        runner.close()
        if client is not None:
            client.close()
    console.print(f"explained {result['explained']} latents ({result['failed']} failed) in {result['seconds']:.0f}s"
                  f" with the {result['explainer']} explainer")


@app.command()
@clear_errors
@locked()
def score(run_dir: Path = typer.Option(..., "--run-dir"), llm_url: Optional[str] = UrlOpt,
          llm_model: Optional[str] = LLMModelOpt, llm_api: Optional[str] = ApiOpt, llm_key_env: Optional[str] = KeyOpt, llm_backend: Optional[str] = BackendOpt,
        llm_concurrency: Optional[int] = ConcurrencyOpt, llm_prompt_logprobs: Optional[bool] = PromptLpOpt,
          scorers: Optional[str] = ScorersOpt, intervention_kl: Optional[str] = KLOpt, executor: str = ExecutorOpt,
          ray_address: Optional[str] = RayAddressOpt, partitions: int = PartitionsOpt,
          examples_per_prompt: Optional[int] = PerPromptOpt, llm_wait: Optional[float] = WaitOpt):
    """Score every explanation with the run's scorers (default detection and fuzzing)."""
    from lantern.pipeline.score_stage import run_score, scorers_for
    from lantern.summary import print_summary, summarise

    cfg = _load(run_dir)
    _set_scorers(cfg, scorers, intervention_kl, examples_per_prompt)
    cfg.save()
    runner = _executor(executor, ray_address, partitions)
    subject = client = None
    try:
        if runner.name == "local":
            if any(s.needs().subject_model for s in scorers_for(cfg)):
                from lantern.models.loading import load_subject_model

                subject = load_subject_model(cfg.model)
            client = _client(cfg, llm_url, llm_model, llm_api, llm_key_env, llm_backend, llm_concurrency,
                             llm_prompt_logprobs, subject=subject, outage_wait=llm_wait)
        else:  # the workers build their own clients from the saved LLM settings
            _client_settings(cfg, llm_url, llm_model, llm_api, llm_key_env, llm_backend, llm_concurrency,
                             llm_prompt_logprobs, outage_wait=llm_wait)
        result = run_score(cfg, client, subject=subject, executor=runner)
    finally:
        runner.close()
        if client is not None:
            client.close()
    print_summary(summarise(cfg, {"score": result["seconds"]}))


@app.command()
@clear_errors
@locked(new_run="run")
def run(run_dir: Optional[Path] = RunDir, model: str = ModelOpt, corpus: str = CorpusOpt, coders: str = CodersOpt,
        layer: int = LayerOpt, tokens: int = TokensOpt, latents: int = LatentsOpt, seed: int = SeedOpt,
        batch_size: int = BatchOpt, value_dtype: str = DtypeOpt, run_mb: float = RunMbOpt, llm_url: Optional[str] = UrlOpt, llm_model: Optional[str] = LLMModelOpt, llm_api: Optional[str] = ApiOpt,
        llm_key_env: Optional[str] = KeyOpt, llm_backend: Optional[str] = BackendOpt,
        llm_concurrency: Optional[int] = ConcurrencyOpt, llm_prompt_logprobs: Optional[bool] = PromptLpOpt, explainer: Optional[str] = ExplainerOpt, candidates: Optional[int] = CandidatesOpt,
        scorers: Optional[str] = ScorersOpt, intervention_kl: Optional[str] = KLOpt, executor: str = ExecutorOpt, ray_address: Optional[str] = RayAddressOpt,
        partitions: int = PartitionsOpt, examples_per_prompt: Optional[int] = PerPromptOpt,
        llm_wait: Optional[float] = WaitOpt, settings: Optional[list[str]] = SetOpt):
    """All stages: cache → records → explain → score, then print the summary."""
    from lantern.llm.factory import make_client
    from lantern.models.loading import load_subject_model
    from lantern.pipeline.cache_stage import run_cache
    from lantern.pipeline.explain_stage import run_explain
    from lantern.pipeline.records_stage import run_records
    from lantern.pipeline.score_stage import run_score
    from lantern.summary import print_summary, summarise

    cfg = _new_config(run_dir, _llm_options(llm_url, llm_model, llm_api, llm_key_env, llm_backend, llm_concurrency,
                                            llm_prompt_logprobs, llm_wait), model=model, corpus=corpus,
                      coders=coders, layer=layer, tokens=tokens, latents=latents, seed=seed, batch_size=batch_size,
                      value_dtype=value_dtype, run_mb=run_mb)
    if settings:
        with_settings(cfg, settings, records_built=_records_built(cfg))
    _set_explainer(cfg, explainer, candidates, records_pending=True)
    _set_scorers(cfg, scorers, intervention_kl, examples_per_prompt)
    cfg.save()
    runner = _executor(executor, ray_address, partitions)
    times: dict[str, float] = {}
    client = None
    try:
        t0 = time.perf_counter()
        subject = load_subject_model(cfg.model)
        times["load model"] = time.perf_counter() - t0
        times["cache"] = run_cache(cfg, subject, executor=runner)["seconds"]
        times["records"] = run_records(cfg, executor=runner)["seconds"]
        # Ray workers build their own LLM client (one in-process engine each, or HTTP to the --llm-url servers)
        client = make_client(cfg.llm, cfg.path, subject) if runner.name == "local" else None
        times["explain"] = run_explain(cfg, client, subject.tokenizer, subject=subject, executor=runner)["seconds"]
        times["score"] = run_score(cfg, client, subject.tokenizer, subject=subject, executor=runner)["seconds"]
    finally:
        runner.close()
        if client is not None:
            client.close()
    print_summary(summarise(cfg, times))


@app.command()
@clear_errors
@locked(new_run="validate")
def validate(run_dir: Optional[Path] = RunDir, model: str = ModelOpt, corpus: str = CorpusOpt,
             tokens: int = typer.Option(32_768, "--tokens", help="Tokens to cache (the planted coder is cheap; "
                                                                   "the LLM's answers are the cost)."),
             seed: int = SeedOpt, llm_url: Optional[str] = UrlOpt, llm_model: Optional[str] = LLMModelOpt,
             llm_api: Optional[str] = ApiOpt, llm_key_env: Optional[str] = KeyOpt, llm_backend: Optional[str] = BackendOpt,
             llm_concurrency: Optional[int] = ConcurrencyOpt, llm_prompt_logprobs: Optional[bool] = PromptLpOpt,
             scorers: Optional[str] = ScorersOpt, intervention_kl: Optional[str] = KLOpt,
             variants: str = typer.Option(",".join(VARIANTS), "--variants",
                                          help="Explanation variants to score, comma-separated: true, shuffled and "
                                               "random (needed for the verdict), partial, overbroad.")):
    """Check the scorers on planted latents: TRUE explanations must beat SHUFFLED ones, RANDOM ones sit at chance."""
    from lantern.llm.factory import make_client
    from lantern.models.loading import load_subject_model
    from lantern.score.registry import parse_scorers
    from lantern.validate import print_report, run_validation, validation_config

    llm = _llm_options(llm_url, llm_model, llm_api, llm_key_env, llm_backend, llm_concurrency, llm_prompt_logprobs)
    run_dir = run_dir or Path("runs") / datetime.now().strftime("validate-%Y%m%d-%H%M%S")
    cfg = validation_config(run_dir, model, corpus, tokens, llm, parse_scorers(scorers) if scorers else None, seed)
    _set_scorers(cfg, None, intervention_kl)
    subject = load_subject_model(cfg.model)
    client = make_client(cfg.llm, cfg.path, subject)
    try:
        report = run_validation(cfg, client, subject, parse_variants(variants))
    finally:
        client.close()
    print_report(report)
    console.print(f"validation written to [bold]{cfg.path / 'validate'}[/bold] (summary.json, summary.md)")


@app.command()
@clear_errors
def report(run_dir: Path = typer.Argument(..., help="A run directory (any stage done).")):
    """Write RUN_DIR/report/index.html: every latent in a sortable, filterable table, one page per latent."""
    from lantern.pipeline.lock import read_lock
    from lantern.report import build_report

    with read_lock(run_dir):
        result = build_report(run_dir)
    console.print(f"report of {result['latents']} latents ({result['pages']} pages) in {result['seconds']:.1f}s → "
                  f"[bold]{result['index']}[/bold]")


@app.command()
@clear_errors
def analyse(run_dir: Path = typer.Argument(..., help="Run directory to analyse."),
            compare: list[Path] = typer.Option([], "--compare", help="Another run to compare with (repeatable): "
                                               "e.g. the same cache with another records.explain_sampling."),
            only: Optional[str] = typer.Option(None, "--only", help="Comma list of analyses (default: all)."),
            pair: list[str] = typer.Option([], "--pair", help="Coders A,B for the cross-layer overlap (repeatable; "
                                                             "default: every two coders at different layers)."),
            resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples per interval."),
            seed: int = SeedOpt):
    """Tables and figures of the paper's analyses under RUN_DIR/analysis/ (index.json lists them)."""
    from rich.table import Table

    from lantern.analysis import run_analyses

    pairs = None
    if pair:
        pairs = []
        for p in pair:
            names = [n.strip() for n in p.split(",")]
            if len(names) != 2 or not all(names):
                raise LanternError(f"--pair {p!r}: expected two coder names, e.g. --pair layers_6,layers_12")
            pairs.append((names[0], names[1]))
    from contextlib import ExitStack

    from lantern.pipeline.lock import read_lock

    with ExitStack() as held:
        for path in [run_dir, *compare]:
            held.enter_context(read_lock(path))
        index = run_analyses(run_dir, compare, [n.strip() for n in only.split(",") if n.strip()] if only else None,
                             pairs, resamples, seed)
    table = Table("analysis", "status", "n", "files / reason")
    for entry in index["analyses"]:
        table.add_row(entry["name"], entry["status"], str(entry["n"]),
                      ", ".join(f for f in entry["files"] if f.endswith(".png")) if entry["status"] == "done"
                      else entry["reason"])
    Console().print(table)
    console.print(f"analyses written to [bold]{Path(run_dir) / 'analysis'}[/bold] (index.json)")
    failed = [e for e in index["analyses"] if e["status"] == "error"]
    if failed:
        for entry in failed:
            console.print(f"[red]error:[/red] {entry['name']}: {entry['reason']}")
        raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
