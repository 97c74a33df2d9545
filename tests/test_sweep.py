"""`lantern sweep` and `lantern compare` on the tiny Gemma 3 (subject and in-process LLM), a real sparsify SAE
checkpoint and a text corpus: the grid's variants share the cache, records and explanations where their settings
allow, a variant that fails leaves the others going, a rerun redoes nothing, and the comparison pairs latents."""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import write_sparsify_folder
from lantern.analysis.paired import compare_variants
from lantern.cli import app
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.llm.base import LLMClient, Request, Response
from lantern.sweep.grid import apply_variant, check_grid, parse_vary, read_grid


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("sweep-inputs")
    corpus = root / "text.txt"
    corpus.write_text(" ".join(f"word{i % 97} and the {i % 13} of" for i in range(4000)))
    coder = root / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=64, k=4)
    return model_dir, corpus, coder


def _sweep(out: Path, inputs, *extra: str):
    model_dir, corpus, coder = inputs
    return CliRunner().invoke(app, [
        "sweep", "--sweep-dir", str(out), "--model", str(model_dir), "--corpus", str(corpus), "--coders", str(coder),
        "--tokens", "8192", "--latents", "2", "--scorers", "detection", "--llm-model", str(model_dir),
        "--set", "records.n_explain=6", "--set", "records.min_windows=12", *extra])


def test_sweep_shares_what_it_can_and_resumes(tmp_path, inputs, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --sweep-dir: the sweep must still be found from elsewhere later
    out = Path("sweep")
    grid = ["--vary", "records.explain_sampling=top,random", "--vary", "explainer.show_activations=false,true"]
    done = _sweep(out, inputs, *grid)
    assert done.exit_code == 0, done.output
    saved = json.loads((out / "sweep.json").read_text())
    states = {v["name"]: v for v in saved["variants"]}
    names = [f"explain_sampling={s},show_activations={a}" for s in ("top", "random") for a in ("false", "true")]
    assert sorted(states) == sorted(names) and all(v["status"] == "done" for v in states.values())
    # one cache for all; records made once per explain sampling; explanations never shared between explainers
    assert [states[n]["reused"] for n in names] == [[], ["cache", "records"], ["cache"], ["cache", "records"]]
    for name, state in states.items():
        run = out / state["run_dir"]
        assert (run / "cache").resolve() == (out / "cache").resolve()
        assert (run / "llm_cache.sqlite").resolve() == (out / "llm_cache.sqlite").resolve()
        cfg = RunConfig.load(run)
        assert f"explain_sampling={cfg.records.explain_sampling}" in name
        assert f"show_activations={str(cfg.explainer.show_activations).lower()}" in name
    runs = {n: out / states[n]["run_dir"] for n in names}
    assert (runs[names[0]] / "records").resolve() == (runs[names[1]] / "records").resolve()
    assert (runs[names[0]] / "records").resolve() != (runs[names[2]] / "records").resolve()
    records = {n: pq.read_table(runs[n] / "records" / "layers_1.parquet").to_pylist() for n in (names[0], names[2])}
    assert {r["latent"] for r in records[names[0]]} == {r["latent"] for r in records[names[2]]}
    assert all(pq.read_table(run / "scores.parquet").num_rows == 2 for run in runs.values())

    # a rerun of the same grid redoes nothing that finished
    mtimes = {n: (run / "scores.parquet").stat().st_mtime_ns for n, run in runs.items()}
    again = _sweep(out, inputs, *grid)
    assert again.exit_code == 0, again.output
    assert {n: (run / "scores.parquet").stat().st_mtime_ns for n, run in runs.items()} == mtimes
    # another grid, or other base settings, in the same directory is refused
    other = _sweep(out, inputs, "--vary", "records.explain_sampling=top,quantiles")
    assert other.exit_code == 2 and "another grid" in other.output
    other = _sweep(out, inputs, *grid, "--seed", "3")
    assert other.exit_code == 2 and "other base settings (seed)" in " ".join(other.output.split())

    # compared (and reported) from another directory; the tiny random model answers no yes/no question, so
    # nothing can be paired, and the comparison says so
    monkeypatch.chdir(tmp_path.parent)
    compared = CliRunner().invoke(app, ["compare", str(tmp_path / out), "--resamples", "200"])
    assert compared.exit_code == 0, compared.output
    notes = json.loads((tmp_path / out / "comparison" / "comparison.json").read_text())["notes"]
    assert len(notes) == 3 and all("no latent has a score in both runs" in n for n in notes)


def test_a_failing_variant_is_recorded_and_the_others_go_on(tmp_path, inputs):
    """Bad input found only when a variant runs (no latent has 100000 windows) fails that variant alone; a variant
    with several candidates gets records with validation windows of its own."""
    out = tmp_path / "sweep"
    done = _sweep(out, inputs, "--vary", "records.min_windows=12,100000", "--vary", "explainer.candidates=1,2")
    assert done.exit_code == 2, done.output
    states = {v["name"]: v for v in json.loads((out / "sweep.json").read_text())["variants"]}
    for name, state in states.items():
        failed = "min_windows=100000" in name
        assert (state["status"] == "failed") == failed, state
        assert ("disjoint activating windows" in (state["error"] or "")) == failed
    assert states["min_windows=12,candidates=2"]["reused"] == ["cache"]  # records of its own
    assert RunConfig.load(out / "variants" / "min_windows=12,candidates=2").records.n_validation_per_decile == 1
    # its records need validation windows too (more windows per latent): it explains the first variant's latents
    # that are still eligible, and says how many are not
    scored = {r["latent"] for r in pq.read_table(out / "variants" / "min_windows=12,candidates=2" / "scores.parquet")
              .to_pylist()}
    first = set(pq.read_table(out / "variants" / "min_windows=12,candidates=1" / "scores.parquet").column("latent")
                .to_pylist())
    assert scored and scored <= first
    if len(scored) < len(first):
        assert "are not eligible with these record settings" in " ".join(done.output.split())
    assert "min_windows=100000,candidates=1 failed" in " ".join(done.output.split())


def test_sweep_shares_explanations_when_only_scoring_varies(tmp_path, inputs):
    out = tmp_path / "sweep"
    done = _sweep(out, inputs, "--vary", "scoring.bootstrap_resamples=50,100")
    assert done.exit_code == 0, done.output
    states = json.loads((out / "sweep.json").read_text())["variants"]
    assert states[1]["reused"] == ["cache", "records", "explain"]
    first, second = (pq.read_table(out / s["run_dir"] / "explanations.parquet").to_pylist() for s in states)
    assert [r["explanation"] for r in first] == [r["explanation"] for r in second]
    assert all(os.path.getsize(out / s["run_dir"] / "scores.parquet") for s in states)
    assert states[1]["saved_seconds"]["explain"] == states[0]["seconds"]["explain"] > 0
    assert states[1]["seconds"]["explain"] < states[0]["seconds"]["explain"]
    # the same detection prompts as the first variant: every answer comes from the shared response cache
    assert states[1]["usage"]["calls"] == states[1]["usage"]["cache_hits"] > 0
    assert states[0]["usage"]["cache_hits"] < states[0]["usage"]["calls"]
    totals = json.loads((out / "sweep.json").read_text())["totals"]
    assert totals["calls"] == states[0]["usage"]["calls"] + states[1]["usage"]["calls"]
    assert "answered from the response cache" in done.output


def test_grid_errors_are_clear_before_anything_runs(tmp_path):
    base = RunConfig(run_dir=str(tmp_path / "base"))
    for vary, message in ((["records.explain_samplin=top"], "has no setting 'explain_samplin'"),
                          (["records.ctx_len=32,abc"], "--vary records.ctx_len='abc': expected int"),
                          (["records.explain_sampling=top,bogus"], "unknown explain_sampling 'bogus'"),
                          (["model=embedded,other"], "a sweep varies records"),
                          (["records.ctx_len"], "expected section.name=value1,value2")):
        with pytest.raises(LanternError, match=message):
            check_grid(base, parse_vary(vary))
    with pytest.raises(LanternError, match="at least one --vary"):
        check_grid(base, parse_vary([]))
    toml = tmp_path / "grid.toml"
    toml.write_text('[vary]\n"records.explain_sampling" = ["top", "quantiles"]\n"explainer.show_activations" = [false, true]\n')
    variants = check_grid(base, read_grid(toml))
    assert [v.name for v in variants][:2] == ["explain_sampling=top,show_activations=false",
                                              "explain_sampling=top,show_activations=true"]
    toml.write_text("[vary]\nrecords = 3\n")
    with pytest.raises(LanternError, match="non-empty list"):
        read_grid(toml)


def test_a_grid_over_budget_is_refused_with_its_cost(tmp_path):
    done = CliRunner().invoke(app, ["sweep", "--sweep-dir", str(tmp_path / "s"), "--latents", "32", "--coders",
                                    "sae,neurons", "--vary", "records.explain_sampling=top,random,quantiles",
                                    "--budget-hours", "1"])
    assert done.exit_code == 2
    assert "3 variant(s) × 64 latents: 3 record set(s), 192 explanations" in " ".join(done.output.split())
    assert not (tmp_path / "s" / "variants").exists()
    # a dry run only reads: it prints the plan while a sweep holds the directory
    from lantern.pipeline.lock import run_lock

    with run_lock(tmp_path / "s"):
        plan = CliRunner().invoke(app, ["sweep", "--sweep-dir", str(tmp_path / "s"), "--latents", "32", "--coders",
                                        "sae", "--vary", "records.explain_sampling=top,random", "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert "explain_sampling=random  (pending)" in plan.output


class HashJudge(LLMClient):
    """Scripted: explains every latent with one phrase and answers yes/no questions with a P(yes) fixed by the
    prompt's hash, so scores are finite and differ between variants (the pairing, not a judgement, is tested)."""

    backend, model_id = "scripted", "hash-judge"

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        out = []
        for r in batch:
            if not r.top_logprobs:
                out.append(Response(text="the word and", prompt_tokens=10, completion_tokens=3))
                continue
            p = (zlib.crc32(r.prompt.encode()) % 1000 + 1) / 1002
            out.append(Response(text=" yes" if p >= 0.5 else " no", prompt_tokens=10, completion_tokens=1,
                                first_token_logprobs={" yes": math.log(p), " no": math.log(1 - p)}))
        return out


def test_compare_pairs_the_latents_of_a_sweep(tmp_path, inputs):
    """The sweep's real records and score stages with a scripted judge; compare's n and mean difference equal a
    count and a mean taken by hand from the two scores.parquet files."""
    from lantern.executors.base import ExecutorConfig
    from lantern.sweep import execute, plan_sweep

    model_dir, corpus, coder = inputs
    base = RunConfig(run_dir=str(tmp_path / "s" / "variants" / "_base"), model=str(model_dir), corpus=str(corpus),
                     coders=[str(coder)], tokens=8192, latents=4, scorers=["detection"])
    base.records = replace(base.records, n_explain=6, min_windows=12)
    sweep = plan_sweep(tmp_path / "s", base, parse_vary(["records.explain_sampling=top,random"]))
    execute(sweep, ExecutorConfig(), client=HashJudge())
    assert [v.status for v in sweep.variants] == ["done", "done"]
    done = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--resamples", "200"])
    assert done.exit_code == 0, done.output
    result = compare_variants({v.name: Path(v.run_dir) for v in sweep.variants}, sweep.variants[0].name,
                              tmp_path / "s" / "comparison", resamples=200)
    scores = [{(r["coder"], r["latent"]): r["auroc"] for r in pq.read_table(Path(v.run_dir) / "scores.parquet").to_pylist()}
              for v in sweep.variants]
    both = [k for k in scores[0] if k in scores[1] and math.isfinite(scores[0][k] or math.nan)
            and math.isfinite(scores[1][k] or math.nan)]
    row = next(r for r in result.rows if r.coder == "all" and r.metric == "auroc")
    assert row.n == len(both) >= 2
    assert row.difference == pytest.approx(sum(scores[1][k] - scores[0][k] for k in both) / len(both))
    assert row.ci_low <= row.difference <= row.ci_high

    # the sweep's report: each variant's own report, and a page with the variants and the comparison
    done = CliRunner().invoke(app, ["report", str(tmp_path / "s")])
    assert done.exit_code == 0, done.output
    page = (tmp_path / "s" / "report" / "index.html").read_text()
    assert all(v.name in page for v in sweep.variants) and f"{row.difference:+.3f}" in page
    assert f"<td>{int(sweep.variants[1].usage['calls']):,}</td>" in page  # each variant's LLM calls
    assert all((Path(v.run_dir) / "report" / "index.html").exists() for v in sweep.variants)
    figures = list((tmp_path / "s" / "report" / "comparison").glob("paired-*.png"))
    assert len(figures) == 1 and figures[0].name in page

    # the cost table: each variant's judge calls as its usage files count them, and what reuse saved
    assert CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--resamples", "200"]).exit_code == 0
    cost = {row["variant"]: row for row in
            json.loads((tmp_path / "s" / "comparison" / "comparison.json").read_text())["cost"]}
    for v in sweep.variants:
        calls = sum(pq.read_table(f).num_rows for f in (Path(v.run_dir) / "usage").glob("*.parquet"))
        assert cost[v.name]["calls"] == calls > 0
    assert cost[sweep.variants[1].name]["saved_seconds"] == pytest.approx(sweep.variants[0].seconds["cache"])
    assert "## Cost" in (tmp_path / "s" / "comparison" / "summary.md").read_text()

    # a variant in use by another command is left out with a note; the finished ones are still compared
    from lantern.pipeline.lock import run_lock

    second = sweep.variants[1].name
    with run_lock(sweep.variants[1].run_dir):
        busy = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--resamples", "200"])
    assert busy.exit_code == 0, busy.output
    saved = json.loads((tmp_path / "s" / "comparison" / "comparison.json").read_text())
    assert f"variant {second} is in use by another lantern command: not compared (compare again when it is done)" \
        in saved["notes"]
    assert second not in (tmp_path / "s" / "comparison" / "paired.csv").read_text()
    # a variant the sweep has not finished is neither compared nor locked (the sweep must be able to run it);
    # an unfinished baseline is a clear error that names --baseline
    state = json.loads((tmp_path / "s" / "sweep.json").read_text())
    state["variants"][1]["status"] = "pending"
    (tmp_path / "s" / "sweep.json").write_text(json.dumps(state))
    with run_lock(sweep.variants[1].run_dir):
        pending = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--resamples", "200"])
    assert pending.exit_code == 0, pending.output
    assert f"variant {second} is pending in the sweep: not compared" in " ".join(pending.output.split())
    unfinished = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--baseline", second])
    assert unfinished.exit_code == 2 and "--baseline NAME" in " ".join(unfinished.output.split())


def test_the_explainer_can_have_its_own_llm_while_the_run_llm_judges(tmp_path, inputs):
    """`explainer.llm_model` (the explainer-size ablation): explain builds that model's client and leaves the run's
    LLM unbuilt; score then uses the run's."""
    from lantern.pipeline.orchestrator import Pipeline

    model_dir, corpus, coder = inputs
    cfg = RunConfig(run_dir=str(tmp_path / "run"), model=str(model_dir), corpus=str(corpus), coders=[str(coder)],
                    tokens=8192, latents=2, scorers=["detection"])
    cfg.records = replace(cfg.records, n_explain=6, min_windows=12)
    cfg.llm = replace(cfg.llm, model="subject")
    cfg.explainer = replace(cfg.explainer, llm_model=str(model_dir))
    with Pipeline(cfg) as pipeline:
        pipeline.cache()
        pipeline.records()
        pipeline.explain()
        assert pipeline.client is None and pipeline._explainer_client is not None
        assert pipeline._explainer_client.model_id != "subject"
        pipeline.score()
        assert pipeline.client is not None
    assert pq.read_table(tmp_path / "run" / "scores.parquet").num_rows == 2


def test_an_ablation_changes_one_setting_at_a_time_from_the_base(tmp_path):
    base = RunConfig(run_dir=str(tmp_path / "base"))
    grid = parse_vary(["explainer.kind=default,cot", "records.n_explain=20,10,40", "explainer.llm_model=none,embedded-0.5b"])
    grid.design = "ablation"
    variants = check_grid(base, grid)
    assert [v.name for v in variants] == ["base", "kind=cot", "n_explain=10", "n_explain=40", "llm_model=embedded-0.5b"]
    configs = {v.name: apply_variant(base, v, tmp_path / v.name) for v in variants}
    assert (configs["n_explain=40"].records.n_explain, configs["n_explain=40"].explainer.kind) == (40, "default")
    assert configs["llm_model=embedded-0.5b"].explainer.llm_model == "embedded-0.5b"
    assert configs["base"].explainer.llm_model is None and configs["kind=cot"].explainer.kind == "cot"
    # `lantern compare` names each ablation variant by the one setting it changes, not every setting of the grid
    from lantern.sweep.run import comparison_inputs, open_sweep

    open_sweep(tmp_path / "sweep", base, grid, variants).save()
    _, varied, per_setting, _ = comparison_inputs([tmp_path / "sweep"])
    assert varied == {"base": "(the base)", "kind=cot": "explainer.kind=cot", "n_explain=10": "records.n_explain=10",
                      "n_explain=40": "records.n_explain=40",
                      "llm_model=embedded-0.5b": "explainer.llm_model=embedded-0.5b"}
    assert per_setting == {}
    grid.design = "sideways"
    with pytest.raises(LanternError, match="--design 'sideways'"):
        check_grid(base, grid)


def test_a_command_on_a_variant_waits_for_its_sweep(tmp_path, inputs):
    """While a sweep holds its directory, a command on one of its variants (which share its cache and records)
    is refused with one clear line; once the sweep is gone it runs."""
    from lantern.pipeline.lock import run_lock

    out = tmp_path / "sweep"
    assert _sweep(out, inputs, "--vary", "scoring.bootstrap_resamples=50,100").exit_code == 0
    variant = out / "variants" / "bootstrap_resamples=50"
    with run_lock(out):
        done = CliRunner().invoke(app, ["score", "--run-dir", str(variant)])
        assert done.exit_code == 2 and "is a variant of the sweep" in " ".join(done.output.split())
    done = CliRunner().invoke(app, ["score", "--run-dir", str(variant)])
    assert done.exit_code == 0, done.output


def test_the_shipped_appendix_grid_is_valid():
    """benchmarks/appendix.toml (the paper's appendix ablations) parses and every variant checks."""
    grid = read_grid(Path(__file__).resolve().parent.parent / "benchmarks" / "appendix.toml")
    variants = check_grid(RunConfig(run_dir="unused"), grid)
    assert grid.design == "ablation" and len(variants) == 10 and variants[0].name == "base"


def test_cost_counts_each_explainer_at_its_own_measured_rate():
    """The explainer-size ablation: explanations by the 0.5B cost what the 0.5B was measured to take, not the 1.5B's."""
    from lantern.sweep.plan import SECONDS_PER_EXPLANATION, estimate

    base = RunConfig(run_dir="unused", coders=["sae"], latents=10, scorers=[])
    small = replace(base, explainer=replace(base.explainer, llm_model="embedded-0.5b"))
    both, alone = estimate([base, small]), estimate([base])
    assert both.explained == 2 * alone.explained == 20 and both.scoring_calls == 0
    assert both.seconds - alone.seconds == pytest.approx(10 * SECONDS_PER_EXPLANATION["embedded-0.5b"])
    assert alone.seconds == pytest.approx(10 * SECONDS_PER_EXPLANATION["embedded"])


def test_a_resumed_sweep_costs_only_what_is_left():
    """Stages a sweep finished are not counted again: a done variant costs nothing, one whose explanations exist
    costs only its scoring, and the description says how many are done."""
    from lantern.sweep.plan import SECONDS_PER_CALL, SECONDS_PER_EXPLANATION, estimate, scoring_calls

    base = RunConfig(run_dir="unused", coders=["sae"], latents=10, scorers=["detection"])
    cot = replace(base, explainer=replace(base.explainer, kind="cot"))
    fresh = estimate([base, cot])
    resumed = estimate([base, cot], [{"cache", "records", "explain", "score"}, {"cache", "records", "explain"}])
    per_variant = 10 * scoring_calls(base)["detection"] * SECONDS_PER_CALL["detection"]
    assert fresh.seconds == pytest.approx(2 * per_variant + 20 * SECONDS_PER_EXPLANATION["embedded"])
    assert resumed.seconds == pytest.approx(per_variant)
    assert (resumed.explained, resumed.records_built, resumed.variants_done) == (0, 0, 1)
    assert "1 done; what is left" in resumed.describe()


def test_only_runs_the_chosen_variants_and_costs_only_them(tmp_path, monkeypatch):
    """`--only`: the chosen variants run now, in grid order, and the estimate counts only theirs; a name the
    sweep does not have is refused with the names it has."""
    import lantern.sweep.run as sweep_run
    from lantern.sweep import plan_sweep

    base = RunConfig(run_dir=str(tmp_path / "s" / "variants" / "_base"), coders=["sae"], latents=10,
                     scorers=["detection"])
    grid = parse_vary(["explainer.kind=default,cot", "records.n_explain=20,10"])
    grid.design = "ablation"
    whole = plan_sweep(tmp_path / "s", base, grid)
    picked = plan_sweep(tmp_path / "s", base, grid, only=["n_explain=10", "kind=cot", "base"])
    assert whole.cost.variants_chosen is None and picked.cost.variants_chosen == 3
    one = plan_sweep(tmp_path / "s", base, grid, only=["kind=cot"])
    assert one.cost.seconds == pytest.approx(whole.cost.seconds / 3)  # three variants costing the same
    assert "1 chosen by --only" in one.cost.describe()
    ran = []
    monkeypatch.setattr(sweep_run, "run_variant", lambda sweep, state, pipeline_for: ran.append(state.name))
    sweep_run.run_sweep(picked, pipeline_for=None)
    assert ran == ["base", "kind=cot", "n_explain=10"]
    # n_explain=10 explains the base's latents (records of its own, pinned): without the base's records it cannot
    with pytest.raises(LanternError, match="explain the latents of the first variant 'base'.*add --only base"):
        plan_sweep(tmp_path / "s", base, grid, only=["n_explain=10"])
    with pytest.raises(LanternError, match="no variant 'cot'; its variants .*: base; kind=cot; n_explain=10"):
        plan_sweep(tmp_path / "s", base, grid, only=["cot"])
    # a sweep saved before a setting existed resumes (the setting counts as its default), a changed one does not
    picked.save()
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    del saved["base_run"]["records"]["latents_from"]
    (tmp_path / "s" / "sweep.json").write_text(json.dumps(saved))
    assert plan_sweep(tmp_path / "s", base, grid).cost.variants == 3
    # a variant of another seed draws its own sample: not pinned
    seeds = plan_sweep(tmp_path / "seeds", base, parse_vary(["records.seed=0,1"]))
    assert [seeds.config(v).records.latents_from for v in seeds.variants] == ["", ""]
    with pytest.raises(LanternError, match=r"other base settings \(records\)"):
        plan_sweep(tmp_path / "s", replace(base, records=replace(base.records, n_negatives=3)), grid)


def test_a_variant_that_changes_eligibility_explains_the_first_variants_latents(tmp_path, inputs):
    """Needing more windows per latent shrinks the eligible set, and a seeded sample of another set is other
    latents: the sweep pins the variant to the first variant's latents (records.latents_from) to stay paired,
    keeping those still eligible."""
    out = tmp_path / "sweep"
    done = _sweep(out, inputs, "--vary", "records.min_windows=12,20")
    assert done.exit_code == 0, done.output
    first, second = (out / "variants" / name for name in ("min_windows=12", "min_windows=20"))
    assert RunConfig.load(second).records.latents_from == "../min_windows=12"
    assert RunConfig.load(first).records.latents_from == ""
    latents = [pq.read_table(run / "records" / "layers_1.latents.parquet").column("latent").to_pylist()
               for run in (first, second)]
    assert len(latents[0]) == 2 and latents[1] and set(latents[1]) <= set(latents[0])
    scored = [{r["latent"] for r in pq.read_table(run / "scores.parquet").to_pylist()} for run in (first, second)]
    assert scored[1] == set(latents[1]) and scored[1] <= scored[0]


def test_a_resumed_sweep_keeps_the_records_a_variant_was_built_with(tmp_path):
    """A sweep begun before pinning existed has variants whose records were built unpinned: resumed, such a variant
    stays with the records its saved config says it was built with (its explanations were made from them), while a
    variant with no records yet is pinned; the decision is saved in sweep.json, so it is made once."""
    from lantern.sweep import plan_sweep
    from lantern.sweep.run import _link, prepare_variant

    base = RunConfig(run_dir=str(tmp_path / "s" / "variants" / "_base"), coders=["sae"], latents=10,
                     scorers=["detection"])
    grid = parse_vary(["records.n_explain=20,10", "records.ctx_len=32,16"])
    grid.design = "ablation"
    sweep = plan_sweep(tmp_path / "s", base, grid)
    old = next(v for v in sweep.variants if v.name == "n_explain=10")
    unpinned = apply_variant(base, next(v for v in check_grid(base, grid) if v.name == old.name), Path(old.run_dir))
    assert unpinned.records.latents_from == "" and sweep.config(old).records.latents_from == "../base"
    old.done, old.pinned = ["cache", "records"], None  # built by a lantern that did not pin
    unpinned.save()  # its run's config, as the sweep saves it before the stages
    built = tmp_path / "s" / "records" / "made-by-an-older-lantern"
    built.mkdir(parents=True)
    _link(built, Path(old.run_dir) / "records")
    sweep.save()
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    for v in saved["variants"]:
        del v["pinned"]
    (tmp_path / "s" / "sweep.json").write_text(json.dumps(saved))
    resumed = plan_sweep(tmp_path / "s", base, grid)
    by_name = {v.name: v for v in resumed.variants}
    assert resumed.config(by_name["n_explain=10"]).records.latents_from == ""
    assert resumed.config(by_name["ctx_len=16"]).records.latents_from == "../base"
    resumed.save()
    pins = {v["name"]: v["pinned"] for v in json.loads((tmp_path / "s" / "sweep.json").read_text())["variants"]}
    assert pins == {"base": False, "n_explain=10": False, "ctx_len=16": True}
    # resumed, its finished records stay linked to the folder they were built in, whatever that folder's key
    prepare_variant(resumed, by_name["n_explain=10"], resumed.config(by_name["n_explain=10"]))
    assert (Path(by_name["n_explain=10"].run_dir) / "records").resolve() == built.resolve()
