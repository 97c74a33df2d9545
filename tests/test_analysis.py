"""`lantern analyse` on real run directories made by the whole pipeline on the tiny Gemma 3 (tests/analysis_runs.py):
every analysis's numbers are recomputed here from the run's own files with scipy/numpy, its figures exist, a run
that lacks an analysis's inputs gets a reason instead of an error, and the README's DuckDB query runs."""
from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from scipy import stats

from analysis_runs import build_run, coder_specs
from lantern.io import write_parquet

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model_dir) -> tuple[Path, Path, list[str]]:
    """(a run with top explain sampling and four coders, one with random sampling of its first coder)."""
    root = tmp_path_factory.mktemp("analysis")
    from lantern.models.loading import load_subject_model

    specs = coder_specs(root / "coders")
    subject = load_subject_model(str(model_dir))
    top = build_run(root / "top", model_dir, specs, subject=subject)
    random = build_run(root / "random", model_dir, specs[:1], sampling="random", cache_from=top.path,
                       subject=subject)
    return top.path, random.path, specs


def lantern(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lantern.cli", *args], capture_output=True, text=True, timeout=900)


def in_process(*args: str):
    """The CLI in this process (typer's runner): for the commands that load no model, it saves an import of torch."""
    from typer.testing import CliRunner

    from lantern.cli import app

    return CliRunner().invoke(app, list(args))


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


@pytest.fixture(scope="module")
def analysed(runs) -> tuple[Path, dict]:
    top, random, _ = runs
    done = lantern("analyse", str(top), "--compare", str(random), "--resamples", "500")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return top, json.loads((top / "analysis" / "index.json").read_text())


def test_index_lists_every_analysis_and_its_files(analysed):
    top, index = analysed
    entries = {e["name"]: e for e in index["analyses"]}
    assert set(entries) == {"scorer_agreement", "sampling_strategies", "intervention", "coder_comparison",
                            "cross_layer_overlap", "explanation_cost"}
    assert entries["intervention"]["status"] == "skipped" and "intervention" in entries["intervention"]["reason"]
    for name, entry in entries.items():
        assert entry["title"] and entry["description"]
        if name == "intervention":
            continue
        assert entry["status"] == "done" and entry["n"] > 0, entry
        files = entry["files"]
        assert f"{name}.png" in files and f"{name}.svg" in files and f"{name}.parquet" in files
        for f in files:
            path = top / "analysis" / f
            assert path.stat().st_size > 0, f
            if f.endswith(".png"):
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if f.endswith(".svg"):
                assert "<svg" in path.read_text()[:2000]
            if f.endswith(".csv"):
                assert pacsv.read_csv(path).num_rows == pq.read_metadata(path.with_suffix(".parquet")).num_rows


def test_scorer_agreement_is_scipys_spearman_over_the_runs_scores(analysed):
    top, _ = analysed
    scores = rows(top / "scores.parquet")
    by_latent: dict[tuple, dict] = {}
    for r in scores:
        by_latent.setdefault((r["coder"], r["latent"]), {})[r["scorer"]] = r["score"]
    table = rows(top / "analysis" / "scorer_agreement.parquet")
    assert {(r["scorer_a"], r["scorer_b"]) for r in table} == set(itertools.combinations(
        ["detection", "embedding", "fuzzing"], 2))
    checked = 0
    for r in table:
        keys = [k for k in by_latent if r["coder"] in ("all", k[0])]
        pairs = np.array([(by_latent[k].get(r["scorer_a"], np.nan), by_latent[k].get(r["scorer_b"], np.nan))
                          for k in keys], dtype=float)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        assert r["n"] == len(pairs)
        if r["coder"] == "all":
            assert r["n"] >= 10
            expected = stats.spearmanr(pairs[:, 0], pairs[:, 1]).statistic
            assert r["spearman"] == pytest.approx(expected)
            assert r["ci_low"] <= r["spearman"] <= r["ci_high"]
            checked += 1
    assert checked == 3
    # the paper's Table 1 value beside ours where it reports the pair (it has no embedding–fuzzing value)
    paper = {(r["scorer_a"], r["scorer_b"]): r["paper_spearman"] for r in table if r["coder"] == "all"}
    assert paper[("detection", "fuzzing")] == 0.73 and paper[("embedding", "fuzzing")] is None
    # the same on AUROC (balanced accuracy at 0.5 is flat for a yes-biased judge)
    ranked = [r for r in rows(top / "analysis" / "scorer_agreement_auroc.parquet") if r["coder"] == "all"]
    assert ranked and all(r["metric_a"] == r["metric_b"] == "auroc" for r in ranked)
    for r in ranked:
        auroc = {(s["coder"], s["latent"], s["scorer"]): s["auroc"] for s in scores}
        pairs = np.array([(auroc.get((c, l, r["scorer_a"])), auroc.get((c, l, r["scorer_b"]))) for c, l in by_latent],
                         dtype=float)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        assert r["n"] == len(pairs) and r["spearman"] == pytest.approx(stats.spearmanr(*pairs.T).statistic)


def test_coder_comparison_is_scipys_mann_whitney(analysed):
    top, _ = analysed
    scores = rows(top / "scores.parquet")
    tests = rows(top / "analysis" / "coder_comparison_tests.parquet")
    assert {r["scorer"] for r in tests} >= {"detection", "fuzzing", "embedding"}
    for r in tests:
        a, b = ([s["score"] for s in scores
                 if s["scorer"] == r["scorer"] and s["coder"] == coder and finite(s["score"])]
                for coder in (r["coder_a"], r["coder_b"]))
        ref = stats.mannwhitneyu(a, b, alternative="two-sided")
        assert (r["n_a"], r["n_b"]) == (len(a), len(b))
        assert r["u"] == ref.statistic and r["p_value"] == pytest.approx(ref.pvalue)
        assert r["p_value"] <= r["p_holm"] <= 1
    # every listed latent is either in the comparison or counted as lost, with the reason (audit defect 9)
    summary = rows(top / "analysis" / "coder_comparison.parquet")
    for r in summary:
        mine = [s for s in scores if s["scorer"] == r["scorer"] and s["coder"] == r["coder"]]
        assert r["latents"] + r["latents_lost"] == len(mine)
        assert (r["latents_lost"] == 0) == (not r["lost_because"])


def test_sampling_strategies_compare_the_two_runs(analysed, runs):
    top, random, _ = runs
    table = rows(top / "analysis" / "sampling_strategies.parquet")
    assert {r["sampling"] for r in table} == {"top", "random"}
    by_decile = [r for r in rows(random / "scores_by_decile.parquet") if r["latent"] is not None]
    for r in [t for t in table if t["sampling"] == "random" and t["coder"] == "all"]:
        cell = [d["accuracy"] for d in by_decile if d["scorer"] == r["scorer"] and d["decile"] == r["decile"]
                and finite(d["accuracy"])]
        assert r["latents"] == len(cell)
        if cell:
            assert r["accuracy"] == pytest.approx(np.mean(cell))
    index = json.loads((top / "analysis" / "index.json").read_text())
    notes = next(e for e in index["analyses"] if e["name"] == "sampling_strategies")["notes"]
    assert any("coders" in n for n in notes)  # the random run has one coder of the four: said, not hidden


def test_cross_layer_overlap_matches_one_to_one_and_reads_real_decoders(analysed, runs):
    from safetensors.numpy import load_file

    top, _, specs = runs
    summary = rows(top / "analysis" / "cross_layer_overlap.parquet")
    assert {(r["coder_a"], r["coder_b"]) for r in summary} == {("layers_1", "layers_2"), ("layers_1", "neurons"),
                                                               ("layers_1", "neurons-topk16")}
    pairs = rows(top / "analysis" / "cross_layer_overlap_pairs.parquet")
    decoders = {f"layers_{i}": load_file(str(Path(specs[i - 1]) / "sae.safetensors"))["W_dec"] for i in (1, 2)}
    explanations = {(r["coder"], r["latent"]): r["explanation"] for r in rows(top / "explanations.parquet")}
    for s in summary:
        mine = [p for p in pairs if (p["coder_a"], p["coder_b"]) == (s["coder_a"], s["coder_b"])]
        assert len(mine) == s["matched"] == min(s["latents_a"], s["latents_b"])
        assert len({p["latent_a"] for p in mine}) == len({p["latent_b"] for p in mine}) == len(mine)
        assert all(-1 - 1e-9 <= p["similarity"] <= 1 + 1e-9 for p in mine)
        assert all(p["explanation_a"] == explanations[(p["coder_a"], p["latent_a"])] for p in mine)
        assert s["matched_mean"] == pytest.approx(np.mean([p["similarity"] for p in mine]))
        assert s["fraction_close"] == pytest.approx(np.mean([p["close"] for p in mine]))
        assert s["rotated_null_repeats"] == 20 and np.isfinite(s["rotated_null_matched_mean"])
        assert all(np.isfinite(p["decoder_cosine"]) for p in mine)  # all four coders write to the 64-d residual
    for p in (p for p in pairs if p["coder_b"] == "layers_2"):
        a, b = decoders["layers_1"][p["latent_a"]], decoders["layers_2"][p["latent_b"]]
        assert p["decoder_cosine"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)


def test_explanation_cost_sums_the_usage_files(analysed):
    top, _ = analysed
    calls = [r for f in sorted((top / "usage").glob("*.parquet")) for r in rows(f)]
    table = rows(top / "analysis" / "explanation_cost.parquet")
    summary = json.loads((top / "summary.json").read_text())
    # the tiny random model's answers are noise: a degenerate loop of one word fails as an explanation, and a
    # latent without an explanation is not scored
    explained = {(r["coder"], r["latent"]) for r in rows(top / "explanations.parquet") if not r["failed"]}
    assert len(explained) >= 15
    for stage in ("explain", "score"):
        row = next(r for r in table if r["stage"] == stage and r["coder"] == "all")
        mine = [c for c in calls if c["stage"] == stage]
        latents = {(c["coder"], c["latent"]) for c in mine}
        assert row["latents"] == len(latents) == (20 if stage == "explain" else len(explained))
        assert row["prompt_tokens_total"] == sum(c["prompt_tokens"] for c in mine)
        assert row["prompt_tokens_per_latent"] == pytest.approx(sum(c["prompt_tokens"] for c in mine) / len(latents))
        assert row["calls_total"] == len(mine)
        assert row["wall_seconds_per_latent"] == pytest.approx(summary["stage_seconds"][stage] / len(latents))


def _with_intervention(run: Path, dest: Path, seed: int = 0) -> dict[tuple, float]:
    """A copy of `run` with intervention rows as the intervention scorer (score/intervention.py) writes them: the
    latent's own explanation predicts steering (~0.5 nats/token, rising with fuzzing), the controls do not."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("cache", "analysis", "llm_cache.sqlite"))
    rng = np.random.default_rng(seed)
    scores = [r for r in rows(dest / "scores.parquet") if r["scorer"] != "intervention"]  # planted ones instead
    fuzzing = {(r["coder"], r["latent"]): r["score"] for r in scores if r["scorer"] == "fuzzing"}
    examples = [r for r in rows(dest / "examples.parquet") if r["scorer"] != "intervention"]
    added, truth = [], {}
    for (coder, latent), fz in fuzzing.items():
        base = {"latent": 0.3 + (fz if finite(fz) else 0.5), "random-direction": 0.0, "shuffled-explanation": 0.05}
        per_variant = {}
        for kl in (0.5, 1.0, 3.0):
            for variant, centre in base.items():
                values = centre * kl / 1.5 + 0.05 * rng.standard_normal(4)
                per_variant.setdefault(variant, []).append(values.mean())
                truth[(coder, latent, kl, variant)] = float(values.mean())
                for i, v in enumerate(values):
                    examples.append({"coder": coder, "latent": latent, "scorer": "intervention", "error": None,
                                     "variant": variant, "target_kl": kl, "value": float(v), "scale": 2.0 * kl,
                                     "achieved_kl": kl * 1.02, "prompt_text": f"prompt {i}", "steered_text": "s",
                                     "clean_text": "c", "prompt_tokens": 0})
        added.append({"coder": coder, "latent": latent, "scorer": "intervention", "metric": "score",
                      "score": float(np.mean(per_variant["latent"])), "n": 12, "n_failed": 0,
                      "random_direction_score": float(np.mean(per_variant["random-direction"])),
                      "shuffled_explanation_score": float(np.mean(per_variant["shuffled-explanation"]))})
    columns = list(dict.fromkeys(k for r in scores + added for k in r))
    write_parquet(dest / "scores.parquet", [{k: r.get(k) for k in columns} for r in scores + added])
    columns = list(dict.fromkeys(k for r in examples for k in r))
    write_parquet(dest / "examples.parquet", [{k: r.get(k) for k in columns} for r in examples])
    return truth


def test_intervention_distributions_and_scatter(runs, tmp_path):
    top, _, _ = runs
    truth = _with_intervention(top, tmp_path / "run")
    done = in_process("analyse", str(tmp_path / "run"), "--only", "intervention", "--resamples", "500")
    assert done.exit_code == 0, done.output[-3000:]
    out = tmp_path / "run" / "analysis"
    entry = json.loads((out / "index.json").read_text())["analyses"]
    assert [e["name"] for e in entry] == ["intervention"] and entry[0]["status"] == "done"
    assert in_process("analyse", str(tmp_path / "run"), "--only", "explanation_cost").exit_code == 0
    entries = json.loads((out / "index.json").read_text())["analyses"]  # --only keeps the other entries
    assert [e["name"] for e in entries] == ["intervention", "explanation_cost"]
    table = rows(out / "intervention.parquet")
    assert {r["target_kl"] for r in table} == {"0.5", "1", "3", "all"}
    for r in (r for r in table if r["target_kl"] != "all"):
        mine = [v for (_, _, kl, variant), v in truth.items()
                if f"{kl:g}" == r["target_kl"] and variant == r["variant"]]
        scored = len({(s["coder"], s["latent"]) for s in rows(top / "scores.parquet")})
        assert r["latents"] == len(mine) == scored >= 15 and r["mean"] == pytest.approx(np.mean(mine))
        if r["variant"] != "latent":  # the planted gap is large: the paired test must see it
            assert r["paired_latents"] == scored and r["wilcoxon_p_vs_latent"] < 1e-3
    scatter = rows(out / "intervention_vs_fuzzing.parquet")
    x = np.array([r["fuzzing"] for r in scatter], dtype=float)
    y = np.array([r["intervention"] for r in scatter], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    ref = stats.pearsonr(x[keep], y[keep])
    assert scatter[0]["n"] == keep.sum() and scatter[0]["pearson_r"] == pytest.approx(ref.statistic)
    assert scatter[0]["pearson_r"] > 0.5
    assert (out / "intervention_vs_fuzzing.png").exists() and (out / "intervention.svg").exists()


def test_a_run_without_results_gets_reasons_not_errors(runs, tmp_path):
    top, _, _ = runs
    (tmp_path / "bare").mkdir()
    shutil.copy(top / "config.json", tmp_path / "bare" / "config.json")
    done = in_process("analyse", str(tmp_path / "bare"))
    assert done.exit_code == 0, done.output[-3000:]
    index = json.loads((tmp_path / "bare" / "analysis" / "index.json").read_text())
    assert all(e["status"] == "skipped" and e["reason"] and not e["files"] for e in index["analyses"])


def test_bad_input_is_one_clear_line(runs, tmp_path):
    top, _, _ = runs
    for args, needle in ((["analyse", str(tmp_path / "nowhere")], "not a lantern run directory"),
                         (["analyse", str(top), "--only", "bogus"], "unknown analysis bogus"),
                         (["analyse", str(top), "--only", "cross_layer_overlap", "--pair", "layers_1,nope"],
                          "does not have")):
        done = in_process(*args)
        assert done.exit_code == 2 and "Traceback" not in done.output, done.output
        assert needle in " ".join(done.output.split()), done.output


def test_readme_duckdb_query_runs(runs):
    import duckdb

    top, _, _ = runs
    section = README.read_text().split("## Analyses", 1)[1]
    query = re.search(r"```sql\n(.*?)```", section, re.DOTALL).group(1).replace("runs/RUN", str(top))
    result = duckdb.connect().sql(query).fetchall()
    scores = [r for r in rows(top / "scores.parquet") if finite(r["score"])]
    groups = {(r["coder"], r["scorer"]) for r in scores}
    assert len(result) == len(groups)
    for coder, scorer, _, latents, mean_score, _ in result:
        mine = [r["score"] for r in scores if (r["coder"], r["scorer"]) == (coder, scorer)]
        assert latents == len(mine) and mean_score == pytest.approx(np.mean(mine), abs=1e-3)
