"""The paired comparison of sweep variants (`lantern compare`) on hand-made run directories: the statistics are
checked against numbers computed here (scipy's Wilcoxon, plain means), not against the module's own output."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from lantern.analysis.paired import compare_variants
from lantern.errors import LanternError
from lantern.io import write_parquet

NAN = float("nan")


def write_run(run_dir, auroc: dict[int, float], coder: str = "sae", scorer: str = "fuzzing",
              deciles: dict[tuple[int, int], float] | None = None, extra: list[dict] | None = None):
    """A run directory whose scores.parquet has one row per latent (auroc as given, f1 = auroc / 2, every other
    metric NaN) and, when given, per-latent decile accuracies plus a pooled row (latent None) to be ignored."""
    rows = [dict(coder=coder, latent=latent, scorer=scorer, n=20, n_failed=0, accuracy=NAN,
                 balanced_accuracy=NAN, balanced_accuracy_calibrated=NAN, precision=NAN, recall=NAN,
                 f1=value / 2, auroc=value, metric="auroc", score=value, prompt_tokens=100, completion_tokens=20)
            for latent, value in auroc.items()]
    write_parquet(run_dir / "scores.parquet", rows + (extra or []))
    if deciles is not None:
        decile_rows = [dict(coder=coder, latent=latent, scorer=scorer, decile=decile, n=2, accuracy=value,
                            auroc=NAN) for (latent, decile), value in deciles.items()]
        decile_rows += [dict(coder=coder, latent=None, scorer=scorer, decile=d, n=9, accuracy=0.123, auroc=NAN)
                        for d in range(11)]
        write_parquet(run_dir / "scores_by_decile.parquet", decile_rows)
    return run_dir


def rows_of(comparison, **match):
    return [r for r in comparison.rows if all(getattr(r, k) == v for k, v in match.items())]


def one(comparison, **match):
    found = rows_of(comparison, **match)
    assert len(found) == 1, found
    return found[0]


def test_a_known_shift_is_found_with_an_interval_that_excludes_zero(tmp_path):
    rng = np.random.default_rng(3)
    base = {latent: float(v) for latent, v in enumerate(rng.uniform(0.5, 0.8, 20))}
    noise = rng.normal(0, 0.02, 20)
    shifted = {latent: v + 0.1 + float(noise[latent]) for latent, v in base.items()}
    c = compare_variants({"top": write_run(tmp_path / "top", base),
                          "quantiles": write_run(tmp_path / "quantiles", shifted)},
                         baseline="top", out_dir=tmp_path / "out", resamples=2000, seed=0)
    row = one(c, variant="quantiles", coder="all", metric="auroc")
    diffs = np.array([shifted[k] - base[k] for k in base])
    assert row.n == 20
    assert row.baseline_mean == pytest.approx(np.mean(list(base.values())))
    assert row.variant_mean == pytest.approx(np.mean(list(shifted.values())))
    assert row.difference == pytest.approx(diffs.mean()) and row.difference == pytest.approx(0.1, abs=0.015)
    assert 0 < row.ci_low < row.difference < row.ci_high
    assert row.ci_high - row.ci_low < 0.05
    assert row.p_value == pytest.approx(stats.wilcoxon(diffs, zero_method="pratt").pvalue) and row.p_value < 0.01
    # the per-coder row is the same latents; f1 (auroc / 2) shifts by half; metrics with no number are skipped
    assert one(c, variant="quantiles", coder="sae", metric="auroc").difference == pytest.approx(row.difference)
    assert one(c, variant="quantiles", coder="all", metric="f1").difference == pytest.approx(diffs.mean() / 2)
    assert {r.metric for r in c.rows} == {"auroc", "f1"}
    # Holm within one coder's rows (2 metrics; `all` repeats the coders' latents, so it is its own family): the
    # smallest p times 2, monotone, capped at 1
    for coder in ("all", "sae"):
        family = [r for r in c.rows if r.coder == coder]
        assert len(family) == 2
        assert min(r.p_holm for r in family) == pytest.approx(min(1.0, 2 * min(r.p_value for r in family)))
    assert all(r.p_holm >= r.p_value for r in c.rows)
    assert c.notes == []


def test_identical_runs_differ_by_exactly_zero_with_p_one(tmp_path):
    values = {latent: 0.5 + 0.02 * latent for latent in range(10)}
    c = compare_variants({"a": write_run(tmp_path / "a", values), "b": write_run(tmp_path / "b", values)},
                         baseline="a", out_dir=tmp_path / "out")
    row = one(c, variant="b", coder="all", metric="auroc")
    assert (row.n, row.difference, row.ci_low, row.ci_high, row.p_value, row.p_holm) == (10, 0.0, 0.0, 0.0, 1.0,
                                                                                          1.0)
    assert row.baseline_mean == row.variant_mean == pytest.approx(0.59)


def test_latents_in_one_run_only_and_nan_values_are_counted_and_left_out(tmp_path):
    base = {0: 0.6, 1: 0.7, 2: 0.8, 3: NAN, 4: 0.5, 5: 0.9}        # 5 only in the baseline
    variant = {0: 0.7, 1: 0.9, 2: NAN, 3: 0.6, 4: 0.4, 6: 0.8, 7: 0.8}  # 6 and 7 only in the variant
    c = compare_variants({"base": write_run(tmp_path / "base", base),
                          "var": write_run(tmp_path / "var", variant)}, baseline="base", out_dir=tmp_path / "o")
    row = one(c, variant="var", coder="all", metric="auroc")
    assert (row.n, row.missing_in_variant, row.missing_in_baseline, row.unpaired_nan) == (3, 1, 2, 2)
    assert row.baseline_mean == pytest.approx((0.6 + 0.7 + 0.5) / 3)
    assert row.variant_mean == pytest.approx((0.7 + 0.9 + 0.4) / 3)
    assert row.difference == pytest.approx((0.1 + 0.2 - 0.1) / 3)
    assert row.p_value == pytest.approx(stats.wilcoxon([0.1, 0.2, -0.1], zero_method="pratt").pvalue)


def test_pooled_coder_pairs_each_latent_with_the_same_coder_only(tmp_path):
    """Latent 0 of the SAE and latent 0 of the neurons are different latents: `all` keeps them apart."""
    neurons = [dict(coder="neurons", latent=0, scorer="fuzzing", auroc=0.5, f1=NAN)]
    neurons_better = [dict(coder="neurons", latent=0, scorer="fuzzing", auroc=0.9, f1=NAN)]
    c = compare_variants({"a": write_run(tmp_path / "a", {0: 0.6, 1: 0.6}, extra=neurons),
                          "b": write_run(tmp_path / "b", {0: 0.6, 1: 0.8}, extra=neurons_better)},
                         baseline="a", out_dir=tmp_path / "o")
    pooled = one(c, coder="all", metric="auroc")
    assert pooled.n == 3 and pooled.difference == pytest.approx((0 + 0.2 + 0.4) / 3)
    assert one(c, coder="neurons", metric="auroc").n == 1
    assert math.isnan(one(c, coder="neurons", metric="auroc").p_value)  # one pair: no test
    assert one(c, coder="sae", metric="auroc").difference == pytest.approx(0.1)


def test_a_variant_without_scores_is_noted_and_the_others_are_compared(tmp_path):
    values = {latent: 0.5 + 0.01 * latent for latent in range(5)}
    (tmp_path / "failed").mkdir()
    c = compare_variants({"base": write_run(tmp_path / "base", values), "failed": tmp_path / "failed",
                          "ok": write_run(tmp_path / "ok", {k: v + 0.05 for k, v in values.items()})},
                         baseline="base", out_dir=tmp_path / "o")
    assert c.notes == ["variant failed has no scores.parquet: not compared"]
    assert {r.variant for r in c.rows} == {"ok"}
    assert one(c, variant="ok", coder="all", metric="auroc").difference == pytest.approx(0.05)
    assert "variant failed has no scores.parquet" in (tmp_path / "o" / "summary.md").read_text()
    assert not (tmp_path / "o" / "paired-failed.png").exists()


def test_an_unknown_baseline_or_no_runs_is_a_clear_error(tmp_path):
    run = write_run(tmp_path / "a", {0: 0.5})
    with pytest.raises(LanternError, match="baseline 'nope'"):
        compare_variants({"a": run}, baseline="nope", out_dir=tmp_path / "o")
    with pytest.raises(LanternError, match="at least one run"):
        compare_variants({}, baseline="a", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_every_file_is_written_and_the_summary_holds_the_table(tmp_path):
    values = {latent: 0.5 + 0.03 * latent for latent in range(8)}
    c = compare_variants({"0.5B": write_run(tmp_path / "small", values),
                          "1.5B / shown": write_run(tmp_path / "big", {k: v + 0.02 for k, v in values.items()})},
                         baseline="0.5B", out_dir=tmp_path / "out", varied={"1.5B / shown": "explainer 1.5B"})
    out = tmp_path / "out"
    expected = ["paired.parquet", "paired.csv", "paired_by_decile.parquet", "paired_by_decile.csv",
                "paired_by_setting.parquet", "paired_by_setting.csv",
                "paired-1_5B_shown.png", "paired-1_5B_shown.svg", "summary.md", "comparison.json"]
    assert sorted(c.files) == sorted(expected)
    assert all((out / name).stat().st_size > 0 for name in expected)
    assert not list(out.glob(".*.tmp"))
    table = pq.read_table(out / "paired.parquet").to_pylist()
    assert len(table) == len(c.rows) == 4 and {r["variant"] for r in table} == {"1.5B / shown"}
    assert pq.read_table(out / "paired_by_decile.parquet").num_rows == 0  # these runs have no decile table
    summary = (out / "summary.md").read_text()
    assert "| variant | varied | scorer | metric | n | baseline mean | variant mean | difference [95% CI] |" in summary
    assert "| 1.5B / shown | explainer 1.5B | fuzzing | auroc | 8 | 0.605 | 0.625 | +0.020 [+0.020, +0.020] |" \
        in summary
    meta = json.loads((out / "comparison.json").read_text())
    assert meta["baseline"] == "0.5B" and meta["labels"] == ["0.5B", "1.5B / shown"]
    assert meta["varied"] == {"1.5B / shown": "explainer 1.5B"} and sorted(meta["files"]) == sorted(expected)


def test_decile_accuracy_is_paired_per_decile(tmp_path):
    base_deciles = {(0, 1): 0.5, (1, 1): 0.5, (2, 1): 1.0, (0, 10): 1.0, (1, 10): 0.0, (2, 10): NAN}
    var_deciles = {(0, 1): 1.0, (1, 1): 1.0, (2, 1): 1.0, (0, 10): 1.0, (1, 10): 0.5, (2, 10): 1.0,
                   (3, 10): 1.0}
    c = compare_variants({"a": write_run(tmp_path / "a", {0: 0.6, 1: 0.6, 2: 0.6}, deciles=base_deciles),
                          "b": write_run(tmp_path / "b", {0: 0.6, 1: 0.6, 2: 0.6}, deciles=var_deciles)},
                         baseline="a", out_dir=tmp_path / "o")
    by_decile = {(r.coder, r.decile): r for r in c.by_decile}
    assert sorted(by_decile) == [("all", 1), ("all", 10), ("sae", 1), ("sae", 10)]
    first = by_decile[("all", 1)]
    assert (first.metric, first.n, first.baseline_mean, first.variant_mean) == ("accuracy", 3, pytest.approx(2 / 3),
                                                                                 pytest.approx(1.0))
    assert first.difference == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert first.p_value == pytest.approx(stats.wilcoxon([0.5, 0.5, 0.0]).pvalue)
    last = by_decile[("all", 10)]
    assert (last.n, last.difference, last.unpaired_nan, last.missing_in_baseline) == (2, pytest.approx(0.25), 1, 1)
    written = pq.read_table(tmp_path / "o" / "paired_by_decile.parquet").to_pylist()
    assert sorted((r["coder"], r["decile"], r["n"]) for r in written) == [("all", 1, 3), ("all", 10, 2),
                                                                         ("sae", 1, 3), ("sae", 10, 2)]


def test_labels_that_make_the_same_file_name_get_distinct_figures(tmp_path):
    values = {latent: 0.5 + 0.03 * latent for latent in range(4)}
    c = compare_variants({"base": write_run(tmp_path / "base", values),
                          "x y": write_run(tmp_path / "v1", {k: v + 0.1 for k, v in values.items()}),
                          "x/y": write_run(tmp_path / "v2", {k: v - 0.1 for k, v in values.items()})},
                         baseline="base", out_dir=tmp_path / "o")
    assert [f for f in c.files if f.endswith(".png")] == ["paired-x_y.png", "paired-x_y-2.png"]
    assert (tmp_path / "o" / "paired-x_y-2.svg").exists()


def test_a_scorer_whose_headline_is_not_a_detection_metric_is_compared_by_its_score(tmp_path):
    """Simulation's headline is a correlation: it is paired as `score`, not dropped for lacking an AUROC."""
    def simulation(values):
        return [dict(coder="sae", latent=latent, scorer="simulation", auroc=NAN, f1=NAN, metric="pearson", score=v)
                for latent, v in enumerate(values)]
    c = compare_variants({"a": write_run(tmp_path / "a", {}, extra=simulation([0.1, 0.2, 0.3])),
                          "b": write_run(tmp_path / "b", {}, extra=simulation([0.3, 0.2, 0.6]))},
                         baseline="a", out_dir=tmp_path / "o")
    row = one(c, coder="all", scorer="simulation", metric="score")
    assert row.n == 3 and row.difference == pytest.approx((0.2 + 0 + 0.3) / 3)
    assert c.notes == []


def test_one_setting_at_a_time_pools_the_contexts_of_the_other_settings(tmp_path):
    """A 2 x 2 grid: `sampling=random vs top` pairs (top, x) with (random, x) for each value x of the other
    setting, never across x; a one-setting grid adds nothing."""
    base = {0: 0.5, 1: 0.6, 2: 0.7}
    grid = {("top", "f"): 0.0, ("top", "t"): 0.05, ("random", "f"): 0.1, ("random", "t"): 0.25}
    runs = {f"sampling={s},shown={x}": write_run(tmp_path / f"{s}-{x}", {k: v + shift for k, v in base.items()})
            for (s, x), shift in grid.items()}
    settings = {label: dict(part.split("=") for part in label.split(",")) for label in runs}
    c = compare_variants(runs, "sampling=top,shown=f", tmp_path / "o", resamples=200, settings=settings)
    sampling = next(r for r in c.by_setting if r.variant == "sampling=random vs top" and r.coder == "all"
                    and r.metric == "auroc")
    assert sampling.n == 6 and sampling.difference == pytest.approx(((0.1 - 0.0) + (0.25 - 0.05)) / 2)
    shown = next(r for r in c.by_setting if r.variant == "shown=t vs f" and r.coder == "all" and r.metric == "auroc")
    assert shown.n == 6 and shown.difference == pytest.approx(((0.05 - 0.0) + (0.25 - 0.1)) / 2)
    assert {"setting-sampling.png", "setting-shown.png", "paired_by_setting.parquet"} <= set(c.files)
    assert "## One setting at a time" in (tmp_path / "o" / "summary.md").read_text()
    one_key = {"top": write_run(tmp_path / "a", base), "random": write_run(tmp_path / "b", base)}
    single = compare_variants(one_key, "top", tmp_path / "o2", settings={"top": {"s": "top"}, "random": {"s": "random"}})
    assert single.by_setting == []
