"""The `lantern` command: one subcommand per stage, and `run` to chain them."""
from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lantern.cli_options import (EXECUTOR_OPTIONS, EXPLAIN_SETTING_OPTIONS, LLM_OPTIONS, RECORD_OPTIONS, BatchOpt, CandidatesOpt, CodersOpt, CorpusOpt,
                                 DtypeOpt, ExistingRunDir, ExplainerOpt, KLOpt, LatentsOpt, LayerOpt, ModelOpt,
                                 PerPromptOpt, RunDir, RunMbOpt, ScorersOpt, SeedOpt, SetOpt, TokensOpt, grouped)
from lantern.configure import apply_explainer, apply_scorers, load_run, open_run, records_built, with_settings
from lantern.errors import LanternError
from lantern.executors.base import ExecutorConfig
from lantern.validate.variants import VARIANTS, parse_rules, parse_variants

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown", help="""
Explain and score sparse-coder latents with LLMs.

The pipeline, in order (`run` does the first four):

* **cache**: tokenize the corpus, cache each coder's sparse activations
* **records**: each latent's explain and test windows, verified negatives
* **explain**: an explanation per latent from the LLM
* **score**: detection, fuzzing, ... scores per latent, with intervals
* **report**: browsable HTML of every latent
* **analyse**: the paper's tables and figures over one or more runs

**validate** checks the scorers themselves on latents with known rules; **sweep** runs a grid of settings over
one cache (the paper's ablations) and **compare** pairs its variants latent by latent.
""")
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
            if kwargs.get("dry_run"):
                return fn(*args, **kwargs)  # reads what was saved and prints a plan: fine beside a running sweep

            def note(old: dict) -> None:
                removed = remove_stale_temp(run_dir)
                console.print(f"[yellow]note:[/yellow] took over the lock of pid {old.get('pid')} on "
                              f"{old.get('host')}, which ended without releasing it (killed?); its finished work is "
                              f"reused" + (f", {removed} half-written temp file(s) it left were removed" if removed
                                           else ""))

            try:
                with _sweep_idle(run_dir), run_lock(run_dir, on_takeover=note):
                    return fn(*args, **kwargs)
            except Exception as err:
                full = as_disk_full(err, run_dir)
                if full is None:
                    raise
                raise full from err

        return wrapper

    return decorate


def _sweep_idle(run_dir: Path):
    """A variant of a sweep shares the sweep's cache and records: a command on it runs only while the sweep does
    not (it holds the sweep's lock shared; the sweep holds it exclusively)."""
    from contextlib import contextmanager, nullcontext

    from lantern.pipeline.lock import RunLockedError, read_lock

    sweep_dir = Path(run_dir).parent.parent
    if Path(run_dir).parent.name != "variants" or not (sweep_dir / "sweep.json").exists():
        return nullcontext()

    @contextmanager
    def held():
        try:
            lock = read_lock(sweep_dir)
            lock.__enter__()
        except RunLockedError as err:
            raise RunLockedError(f"{run_dir} is a variant of the sweep {sweep_dir}, which is running and shares its "
                                 f"cache and records with it: wait for the sweep to end ({err})") from None
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    return held()


def _pipeline(cfg, executor: ExecutorConfig, llm: dict | None = None):
    from lantern.executors.base import make_executor
    from lantern.pipeline.orchestrator import Pipeline

    return Pipeline(cfg, make_executor(executor), llm or {})


@app.command(epilog="""Examples:

```
lantern run                                   # the embedded default, ~12 min on 2 cores
lantern run --coders sae,random --latents 32 --scorers detection,fuzzing,intervention
lantern run --llm-url http://127.0.0.1:8000/v1 --llm-api chat --set records.explain_sampling=quantiles
```""")
@clear_errors
@locked(new_run="run")
@grouped("executor", EXECUTOR_OPTIONS)
@grouped("llm", LLM_OPTIONS)
@grouped("explain_settings", EXPLAIN_SETTING_OPTIONS)
@grouped("record_settings", RECORD_OPTIONS)
def run(run_dir: Optional[Path] = RunDir, model: str = ModelOpt, corpus: str = CorpusOpt, coders: str = CodersOpt,
        layer: int = LayerOpt, tokens: int = TokensOpt, latents: int = LatentsOpt, seed: int = SeedOpt,
        batch_size: int = BatchOpt, value_dtype: str = DtypeOpt, run_mb: float = RunMbOpt,
        explainer: Optional[str] = ExplainerOpt, candidates: Optional[int] = CandidatesOpt,
        scorers: Optional[str] = ScorersOpt, intervention_kl: Optional[str] = KLOpt,
        examples_per_prompt: Optional[int] = PerPromptOpt, settings: Optional[list[str]] = SetOpt,
        report: bool = typer.Option(True, "--report/--no-report", help="Build the HTML report at the end."),
        llm: dict = None, executor: ExecutorConfig = None, record_settings: list = None,
        explain_settings: list = None):
    """All stages: cache → records → explain → score; prints the summary and builds the report."""
    from lantern.summary import print_summary, summarise

    cfg = open_run(run_dir, llm, model=model, corpus=corpus, coders=coders, layer=layer, tokens=tokens,
                   latents=latents, seed=seed, batch_size=batch_size, value_dtype=value_dtype, run_mb=run_mb)
    settings = [*(settings or []), *record_settings, *explain_settings]
    if settings:
        with_settings(cfg, settings, records_built=records_built(cfg))
    apply_explainer(cfg, explainer, candidates, records_pending=True)
    apply_scorers(cfg, scorers, intervention_kl, examples_per_prompt)
    cfg.save()
    with _pipeline(cfg, executor) as pipeline:
        pipeline.all_stages()
    print_summary(summarise(cfg, pipeline.seconds))
    if report:
        _build_report(cfg.path, lock_held=True)


@app.command(epilog="""Examples:

```
lantern cache --run-dir runs/mine --coders sae,neurons-topk:32 --tokens 262144
lantern cache --run-dir runs/mine --coders path/to/sae-checkpoint:layers.6.mlp
lantern cache --run-dir runs/mine --repair     # recompute only shards that fail their checksums
```""")
@clear_errors
@locked(new_run="run")
@grouped("executor", EXECUTOR_OPTIONS)
def cache(run_dir: Optional[Path] = RunDir, model: str = ModelOpt, corpus: str = CorpusOpt, coders: str = CodersOpt,
          layer: int = LayerOpt, tokens: int = TokensOpt, latents: int = LatentsOpt, seed: int = SeedOpt,
          batch_size: int = BatchOpt, value_dtype: str = DtypeOpt, run_mb: float = RunMbOpt,
          repair: bool = typer.Option(False, "--repair", help="Check every shard of the run's finished cache against "
                                                              "its checksums and recompute only the damaged ones."),
          executor: ExecutorConfig = None):
    """Tokenize the corpus and cache the coders' sparse activations (resumable)."""
    if repair:
        return _repair(run_dir)
    cfg = open_run(run_dir, {}, model=model, corpus=corpus, coders=coders, layer=layer, tokens=tokens,
                   latents=latents, seed=seed, batch_size=batch_size, value_dtype=value_dtype, run_mb=run_mb)
    cfg.save()
    with _pipeline(cfg, executor) as pipeline:
        result = pipeline.cache()
    console.print(f"cached {result['n_tokens']} tokens in {result['seconds']:.0f}s → {cfg.path / 'cache'}")


def _repair(run_dir: Path) -> None:
    from lantern.pipeline.repair_stage import run_repair

    report = run_repair(load_run(run_dir))
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


@app.command(epilog="""Examples:

```
lantern records --run-dir runs/mine
lantern records --run-dir runs/mine --set records.n_test_per_decile=2 --set records.explain_sampling=quantiles
```""")
@clear_errors
@locked()
@grouped("executor", EXECUTOR_OPTIONS)
@grouped("record_settings", RECORD_OPTIONS)
def records(run_dir: Path = ExistingRunDir, settings: Optional[list[str]] = SetOpt, executor: ExecutorConfig = None,
            record_settings: list = None):
    """Build each latent's explain/test examples and verified negatives."""
    cfg = load_run(run_dir)
    settings = [*(settings or []), *record_settings]
    if settings:
        with_settings(cfg, settings, records_built=records_built(cfg)).save()
    with _pipeline(cfg, executor) as pipeline:
        result = pipeline.records()
    console.print(f"records: {result['latents']} in {result['seconds']:.1f}s")


@app.command(epilog="""Examples:

```
lantern explain --run-dir runs/mine --explainer cot
lantern explain --run-dir runs/mine --llm-model embedded-0.5b --candidates 3
lantern explain --run-dir runs/mine --llm-url http://127.0.0.1:8000/v1 --llm-api chat --llm-concurrency 32
```""")
@clear_errors
@locked()
@grouped("executor", EXECUTOR_OPTIONS)
@grouped("llm", LLM_OPTIONS)
@grouped("explain_settings", EXPLAIN_SETTING_OPTIONS)
def explain(run_dir: Path = ExistingRunDir, explainer: Optional[str] = ExplainerOpt,
            candidates: Optional[int] = CandidatesOpt, llm: dict = None, executor: ExecutorConfig = None,
            explain_settings: list = None):
    """Explain every recorded latent with the LLM."""
    cfg = load_run(run_dir)
    if explainer is not None or candidates is not None or explain_settings:
        with_settings(cfg, explain_settings)
        apply_explainer(cfg, explainer, candidates, records_pending=False)
        cfg.save()
    with _pipeline(cfg, executor, llm) as pipeline:
        result = pipeline.explain()
    console.print(f"explained {result['explained']} latents ({result['failed']} failed) in {result['seconds']:.0f}s"
                  f" with the {result['explainer']} explainer")


@app.command(epilog="""Examples:

```
lantern score --run-dir runs/mine
lantern score --run-dir runs/mine --scorers detection,fuzzing,simulation,intervention --intervention-kl 0.5,1
lantern score --run-dir runs/mine --examples-per-prompt 5    # lists of verdicts instead of log-probs
```""")
@clear_errors
@locked()
@grouped("executor", EXECUTOR_OPTIONS)
@grouped("llm", LLM_OPTIONS)
def score(run_dir: Path = ExistingRunDir, scorers: Optional[str] = ScorersOpt, intervention_kl: Optional[str] = KLOpt,
          examples_per_prompt: Optional[int] = PerPromptOpt, llm: dict = None, executor: ExecutorConfig = None):
    """Score every explanation with the run's scorers (default detection and fuzzing)."""
    from lantern.summary import print_summary, summarise

    cfg = load_run(run_dir)
    apply_scorers(cfg, scorers, intervention_kl, examples_per_prompt)
    cfg.save()
    with _pipeline(cfg, executor, llm) as pipeline:
        pipeline.score()
    print_summary(summarise(cfg, {"score": pipeline.seconds["score"]}))


def _build_report(run_dir: Path, lock_held: bool = False) -> None:
    """The report, read under a shared lock unless this command already holds the run's exclusive one."""
    from contextlib import nullcontext

    from lantern.pipeline.lock import read_lock
    from lantern.report import build_report

    with nullcontext() if lock_held else read_lock(run_dir):
        result = build_report(run_dir)
    console.print(f"report of {result['latents']} latents ({result['pages']} pages) in {result['seconds']:.1f}s → "
                  f"[bold]{result['index']}[/bold]")


@app.command(epilog="""Examples:

```
lantern report runs/mine      # then open runs/mine/report/index.html
lantern report runs/ablation  # a sweep: every variant's report and the paired comparison
```""")
@clear_errors
def report(run_dir: Path = typer.Argument(..., help="A run directory (any stage done), or a sweep directory.")):
    """Write RUN_DIR/report/index.html: every latent in a sortable, filterable table, one page per latent (for a
    sweep: each variant's report and a page with the variants and their paired comparison)."""
    if (Path(run_dir) / "sweep.json").exists():
        from lantern.pipeline.lock import read_lock
        from lantern.report.sweep_page import build_sweep_report

        with read_lock(run_dir):
            result = build_sweep_report(run_dir)
        console.print(f"sweep report ({result['variants']} variant reports) → [bold]{result['index']}[/bold]")
        return
    _build_report(run_dir)


@app.command(epilog="""Examples:

```
lantern analyse runs/mine
lantern analyse runs/top --compare runs/quantiles --only sampling_strategies,scorer_agreement
lantern analyse runs/two-layers --pair sae,layers.10
```""")
@clear_errors
def analyse(run_dir: Path = typer.Argument(..., help="Run directory to analyse."),
            compare: list[Path] = typer.Option([], "--compare", help="Another run to compare with (repeatable): "
                                               "e.g. the same cache with another records.explain_sampling."),
            only: Optional[str] = typer.Option(None, "--only", help="Comma list of analyses (default: all): scorer_agreement, "
                                                                   "sampling_strategies, intervention, coder_comparison, "
                                                                   "cross_layer_overlap, explanation_cost."),
            pair: list[str] = typer.Option([], "--pair", help="Coders A,B for the cross-layer overlap (repeatable; "
                                                             "default: every two coders at different layers)."),
            resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples per interval."),
            seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples and the rotated baseline.")):
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


@app.command(epilog="""Examples:

```
lantern validate                                  # the embedded 1.5B judge, detection and fuzzing
lantern validate --scorers detection,fuzzing,simulation --variants true,shuffled,random,partial,overbroad
lantern validate --llm-url http://127.0.0.1:8000/v1 --llm-api chat
```""")
@clear_errors
@locked(new_run="validate")
@grouped("llm", LLM_OPTIONS)
def validate(run_dir: Optional[Path] = RunDir, model: str = ModelOpt, corpus: str = CorpusOpt,
             tokens: int = typer.Option(32_768, "--tokens", help="Tokens to cache (the planted coder is cheap; "
                                                                   "the LLM's answers are the cost)."),
             seed: int = SeedOpt, scorers: Optional[str] = ScorersOpt, intervention_kl: Optional[str] = KLOpt,
             examples_per_prompt: Optional[int] = PerPromptOpt,
             variants: str = typer.Option(",".join(VARIANTS), "--variants",
                                          help="Explanation variants to score, comma-separated: true, shuffled and "
                                               "random (needed for the verdict), partial, overbroad."),
             rules: Optional[str] = typer.Option(None, "--rules", help="Planted rules to score, comma-separated: "
                                                 "rule names (digits, the, negation, ...) and/or the groups tuned "
                                                 "and held-out (default: every rule)."),
             llm: dict = None):
    """Check the scorers on planted latents: TRUE explanations must beat SHUFFLED ones, RANDOM ones sit at chance."""
    from lantern.pipeline.orchestrator import Pipeline
    from lantern.score.registry import parse_scorers
    from lantern.validate import print_report, run_validation, validation_config

    cfg = validation_config(run_dir, model, corpus, tokens, llm, parse_scorers(scorers) if scorers else None, seed)
    apply_scorers(cfg, None, intervention_kl, examples_per_prompt)
    chosen = parse_variants(variants)
    subset = parse_rules(rules)
    with Pipeline(cfg) as pipeline:
        report = run_validation(cfg, pipeline=pipeline, variants=chosen, rules=subset)
    print_report(report)
    console.print(f"validation written to [bold]{cfg.path / 'validate'}[/bold] (summary.json, summary.md)")


@app.command(epilog="""Examples:

```
lantern sweep --sweep-dir runs/ablation --latents 32 --vary records.explain_sampling=top,random,quantiles
lantern sweep --sweep-dir runs/ablation --vary explainer.show_activations=false,true --vary llm.model=embedded,embedded-0.5b
lantern sweep --sweep-dir runs/appendix --design ablation --vary explainer.kind=default,cot --vary records.n_explain=20,10,40
lantern sweep --sweep-dir runs/ablation --grid ablations.toml --budget-hours 6 --dry-run
```""")
@clear_errors
@locked(new_run="sweep")
@grouped("executor", EXECUTOR_OPTIONS)
@grouped("llm", LLM_OPTIONS)
@grouped("explain_settings", EXPLAIN_SETTING_OPTIONS)
@grouped("record_settings", RECORD_OPTIONS)
def sweep(run_dir: Optional[Path] = typer.Option(None, "--sweep-dir", "--run-dir", metavar="<path>",
                                                 help="Sweep directory (default: runs/sweep-TIMESTAMP); each variant "
                                                      "is a run directory under variants/."),
          vary: list[str] = typer.Option([], "--vary", help="A setting and its values, section.name=v1,v2 "
                                         "(repeatable): records.NAME, explainer.NAME, scoring.NAME or llm.model."),
          design: Optional[str] = typer.Option(None, "--design", help="grid (every combination, the default) or "
                                               "ablation (the first values as the base, then one setting changed "
                                               "at a time)."),
          grid: Optional[Path] = typer.Option(None, "--grid", help="A TOML file with a [vary] table of "
                                              "\"section.name\" = [values] (and optionally design = \"ablation\"), "
                                              "instead of --vary."),
          budget_hours: Optional[float] = typer.Option(None, "--budget-hours", help="Refuse a grid whose estimated "
                                                       "time (at the embedded models' measured rates) exceeds this; "
                                                       "a resumed sweep counts the work left (or chosen by --only)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the variants and the estimated cost; run "
                                       "nothing."),
          only: list[str] = typer.Option([], "--only", metavar="<name>", help="Run only this variant now (its "
                                         "whole name as --dry-run prints it, commas included; repeat for more); "
                                         "the others stay pending for a later run of the same command."),
          model: str = ModelOpt, corpus: str = CorpusOpt, coders: str = CodersOpt, layer: int = LayerOpt,
          tokens: int = TokensOpt, latents: int = LatentsOpt, seed: int = SeedOpt, batch_size: int = BatchOpt,
          explainer: Optional[str] = ExplainerOpt, scorers: Optional[str] = ScorersOpt,
          settings: Optional[list[str]] = SetOpt, llm: dict = None, executor: ExecutorConfig = None,
          record_settings: list = None, explain_settings: list = None):
    """Run a grid of settings over one cache: one run directory per variant, sharing what the varied settings
    leave unchanged (records, explanations, the response cache); resumable."""
    from rich.table import Table

    from lantern.sweep import execute, plan_sweep
    from lantern.sweep.grid import parse_vary, read_grid

    if grid is not None and vary:
        raise LanternError("give either --vary or --grid, not both")
    chosen = read_grid(grid) if grid is not None else parse_vary(vary)
    if design is not None:
        chosen.design = design
    base = open_run(Path(run_dir) / "variants" / "_base", llm, model=model, corpus=corpus, coders=coders, layer=layer,
                    tokens=tokens, latents=latents, seed=seed, batch_size=batch_size)
    settings = [*(settings or []), *record_settings, *explain_settings]
    if settings:
        with_settings(base, settings)
    apply_explainer(base, explainer, None, records_pending=True)
    apply_scorers(base, scorers)
    picked = list(only) or None
    planned = plan_sweep(Path(run_dir), base, chosen, budget_hours, picked)
    console.print(f"sweep of {len(planned.variants)} variant(s): {planned.cost.describe()}")
    if dry_run:
        for state in planned.variants:
            waits = " (not now: --only)" if picked and state.name not in picked and state.status != "done" else ""
            console.print(f"  {state.name}  ({state.status}){waits}", markup=False)
        return
    done = execute(planned, executor)
    table = Table("variant", "status", "reused", "seconds", "LLM calls (cached)", "error")
    for state in done.variants:
        table.add_row(state.name, state.status, ", ".join(state.reused) or "-", f"{sum(state.seconds.values()):.0f}",
                      f"{state.usage.get('calls', 0):.0f} ({state.usage.get('cache_hits', 0):.0f})", state.error or "")
    Console().print(table)
    totals = done.totals()
    console.print(f"sweep: {totals['seconds']:.0f} s of stages, ~{totals['saved_seconds']:.0f} s saved by shared "
                  f"records and explanations; {totals.get('calls', 0):.0f} LLM calls, {totals.get('cache_hits', 0):.0f} "
                  f"answered from the response cache (~{totals.get('cached_seconds', 0):.0f} s of LLM time saved)")
    console.print(f"sweep written to [bold]{run_dir}[/bold] (sweep.json); compare the variants with "
                  f"`lantern compare {run_dir}`")
    if any(state.error for state in done.variants):
        raise typer.Exit(2)


@app.command(epilog="""Examples:

```
lantern compare runs/ablation                                   # a sweep: every variant against the first
lantern compare runs/ablation --baseline explain_sampling=quantiles     # a variant's name (sweep.json)
lantern compare runs/top runs/quantiles --out runs/top-vs-quantiles
```""")
@clear_errors
def compare(paths: list[Path] = typer.Argument(..., help="A sweep directory, or run directories (the first is the "
                                               "baseline) that scored the same latents."),
            baseline: Optional[str] = typer.Option(None, "--baseline", help="The variant the others are compared "
                                                   "with (default: the sweep's first variant)."),
            out: Optional[Path] = typer.Option(None, "--out", help="Where to write (default: SWEEP/comparison, or "
                                               "the first run's analysis/comparison)."),
            resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples per interval."),
            seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples.")):
    """Paired comparison of variants on the same latents: per-latent differences with bootstrap intervals, a
    Wilcoxon signed-rank test (Holm-corrected), per decile too; a table and a figure per variant."""
    from rich.table import Table

    from contextlib import ExitStack

    from lantern.analysis.paired import compare_variants
    from lantern.pipeline.lock import RunLockedError, read_lock
    from lantern.sweep.run import comparison_inputs, sweep_stage_costs

    runs, varied, settings, default_out = comparison_inputs(paths)
    stages = sweep_stage_costs(paths[0]) if len(paths) == 1 else {}
    chosen = baseline or next(iter(runs))
    busy = []
    with ExitStack() as held:  # no run may be writing what is compared
        if stages:  # a sweep: the variants it finished can be compared while it runs the others
            for label, run_dir in list(runs.items()):
                status = stages.get(label, {}).get("status", "pending")
                why = None if status == "done" else f"{status} in the sweep"
                if why is None:  # a finished variant is never rerun by its sweep: a read lock cannot stop it
                    try:
                        held.enter_context(read_lock(run_dir))
                    except RunLockedError:
                        why = "in use by another lantern command"
                if why is None:
                    continue
                if label == chosen:
                    raise LanternError(f"the baseline {label!r} is {why}: nothing to compare with yet; compare "
                                       f"again when it is done, or choose a finished variant with --baseline NAME")
                busy.append(f"variant {label} is {why}: not compared (compare again when it is done)")
                del runs[label]
        else:
            for path in paths:
                held.enter_context(read_lock(path))
        result = compare_variants(runs, chosen, out or default_out, resamples, seed, varied, settings, stages, busy)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    table = Table("variant", "scorer", "metric", "n", "baseline", "variant mean", "difference [95% CI]", "Holm p")
    for row in (r for r in result.rows if r.coder == "all"):
        table.add_row(row.variant, row.scorer, row.metric, str(row.n), f"{row.baseline_mean:.3f}",
                      f"{row.variant_mean:.3f}", f"{row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]",
                      f"{row.p_holm:.3g}")
    Console().print(table)
    console.print(f"comparison written to [bold]{out or default_out}[/bold] (summary.md, paired.parquet, figures)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
