"""Cross-layer overlap: do two coders at different layers hold the same latents?

The explanations of each coder's explained latents are embedded with the run's embedder (score/embedders.py;
`scoring.embedder`, the subject model's mean hidden state by default), centred on their joint mean (mean-pooled
hidden states share a large common component that would make every pair look alike) and matched one-to-one by the
Hungarian algorithm (scipy.optimize.linear_sum_assignment, maximising summed cosine similarity). Two baselines:
the similarity of every cross pair (what a random one-to-one pairing gives, the shuffled baseline); and the same
Hungarian matching after a random rotation of the second coder's vectors, which keeps each set's own geometry but
destroys any correspondence. A match is "close" when it beats the 95th percentile of the rotated matchings'
similarities: the random-pair percentile would not do, since the best one-to-one matching of two unrelated sets
already beats it for most latents (tests/test_analysis_stats.py plants such a case).
Where both coders expose decoder directions in the same space (same output width), the same is done with the
cosine of their decoder directions, and each explanation match's decoder cosine is reported."""
from __future__ import annotations

import itertools
import re

import numpy as np

from lantern.analysis.common import Analysed, Context, Skip, read_rows, subplots, write_figure, write_table
from lantern.analysis.stats import match, random_rotation, unit_rows
from lantern.errors import LanternError
from lantern.io import read_json
from lantern.pipeline.files import CACHE, EXPLANATIONS, SELECTION, records_file
from lantern.records.matching import MATCHED_SUFFIX

NAME = "cross_layer_overlap"
PAIRS = "cross_layer_overlap_pairs"
TITLE = "Cross-layer overlap"
DESCRIPTION = ("Explanations of two coders at different layers, embedded and matched one-to-one (Hungarian); "
               "matched cosine similarity vs every cross pair (random pairing) and vs the same matching after a random "
               "rotation; fraction of latents whose match beats the 95th percentile of the rotated matchings; the "
               "same with decoder directions where both coders write to the same space.")
CLOSE_PERCENTILE = 95


def hookpoints(ctx: Context) -> dict[str, str]:
    """{coder name: hookpoint} from the cache manifests."""
    out = {}
    for manifest in sorted((ctx.run_dir / CACHE).glob("*/manifest.json")):
        coder = read_json(manifest)["coder"]
        out[coder["name"]] = coder["hookpoint"]
    return out


def layer_of(hookpoint: str) -> int | None:
    found = re.search(r"layers?\.(\d+)", hookpoint) or re.search(r"blocks\.(\d+)", hookpoint)
    return int(found.group(1)) if found else None


def explanations(ctx: Context) -> dict[str, dict[int, str]]:
    """{coder: {latent: explanation}}: the chosen candidate where best-of-k chose one, else candidate 0."""
    rows = [r for r in read_rows(ctx.run_dir / EXPLANATIONS) if not r["failed"] and r.get("explanation")]
    chosen = {(r["coder"], r["latent"]): r["candidate"] for r in read_rows(ctx.run_dir / SELECTION) if r["chosen"]}
    out: dict[str, dict[int, str]] = {}
    for r in sorted(rows, key=lambda r: r.get("candidate") or 0):
        want = chosen.get((r["coder"], r["latent"]), 0)
        if (r.get("candidate") or 0) == want:
            out.setdefault(r["coder"], {})[r["latent"]] = r["explanation"]
    return out


def coder_pairs(ctx: Context, hooks: dict[str, str], explained: dict[str, dict[int, str]]) -> list[tuple[str, str]]:
    if ctx.pairs is not None:
        for pair in ctx.pairs:
            for name in pair:
                if name not in hooks:
                    raise LanternError(f"--pair names coder {name!r}, which this run does not have; its coders: "
                                       f"{', '.join(sorted(hooks))}")
        return [p for p in ctx.pairs if all(explained.get(n) for n in p)]
    names = [n for n in hooks if len(explained.get(n, {})) >= 2]
    return [(a, b) for a, b in itertools.combinations(names, 2) if different_layers(hooks[a], hooks[b])]


def different_layers(a: str, b: str) -> bool:
    """By layer number where both hookpoints name one, else by hookpoint."""
    la, lb = layer_of(a), layer_of(b)
    return la != lb if la is not None and lb is not None else a != b


def compare_sets(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, repeats: int) -> dict:
    """Hungarian matching of unit rows `a` to unit rows `b` by cosine, and both baselines."""
    sim = a @ b.T
    rows, cols = match(sim)
    matched = sim[rows, cols]
    null_means, null_matched = [], []
    for _ in range(max(repeats, 1)):
        rotated = a @ (b @ random_rotation(b.shape[1], rng)).T
        r, c = match(rotated)
        null_matched.append(rotated[r, c])
        null_means.append(float(rotated[r, c].mean()))
    threshold = float(np.percentile(np.concatenate(null_matched), CLOSE_PERCENTILE))
    return {"rows": rows, "cols": cols, "matched": matched, "baseline": sim.ravel(), "threshold": threshold,
            "fraction_close": float((matched > threshold).mean()), "null": np.array(null_means)}


def _repeats(n_a: int, n_b: int, dim: int) -> int:
    """Rotation-null repeats: 20, fewer where one matching or one rotation is expensive."""
    return 20 if n_a * n_b <= 250_000 and dim <= 1024 else 3


def _decoders(ctx: Context, names: set[str]) -> dict[str, np.ndarray]:
    from lantern.coders.loading import load_coders

    model = ctx.subject().model
    out = {}
    for spec in ctx.cfg.coders:
        for coder in load_coders(spec, model, ctx.cfg.layer):
            if coder.name in names:
                directions = coder.decoder_directions()
                if directions is not None:
                    out[coder.name] = directions.detach().float().cpu().numpy()
    return out


def saved_pairs(ctx: Context, a: str, b: str) -> list[tuple[int, int]]:
    """(latent of a, latent of b) pairs chosen by decoder direction at records time (records.match_latents_to)."""
    for anchor, other, flip in ((a, b, False), (b, a, True)):
        path = records_file(ctx.run_dir, other).with_suffix(MATCHED_SUFFIX)
        saved = read_json(path) if path.exists() else None
        if saved is not None and saved["matched_to"] == anchor:
            pairs = [(p["anchor_latent"], p["latent"]) for p in saved["pairs"]]
            return [(y, x) for x, y in pairs] if flip else pairs
    return []


def matched_pairs(ctx: Context, a: str, b: str, latents: dict[str, list[int]], ea: np.ndarray, eb: np.ndarray,
                  rng: np.random.Generator, permutations: int = 10_000) -> dict:
    """Where b's latents were chosen as the decoder matches of a's: are a pair's explanations more alike than the
    same latents paired at random? (mean explanation cosine of the pairs vs a permutation null; and how often the
    explanations' own Hungarian matching finds the decoder partner, chance 1/n)."""
    index_a = {latent: i for i, latent in enumerate(latents[a])}
    index_b = {latent: j for j, latent in enumerate(latents[b])}
    pairs = [(index_a[x], index_b[y]) for x, y in saved_pairs(ctx, a, b) if x in index_a and y in index_b]
    if len(pairs) < 2:
        return {}
    i, j = np.array(pairs).T
    sim = ea[i] @ eb[j].T
    paired = float(np.diag(sim).mean())
    null = np.array([np.diag(sim[:, rng.permutation(len(j))]).mean() for _ in range(permutations)])
    rows, cols = match(sim)
    return {"decoder_matched_pairs": len(pairs), "explanation_cosine_of_decoder_pairs": paired,
            "explanation_cosine_shuffled_pairs": float(null.mean()),
            "decoder_pairs_permutation_p": float((1 + np.sum(null >= paired)) / (1 + permutations)),
            "explanation_match_finds_decoder_partner": float(np.mean(rows == cols)),
            "explanation_match_chance": 1.0 / len(pairs)}


def run(ctx: Context) -> Analysed:
    hooks = hookpoints(ctx)
    explained = explanations(ctx)
    pairs = coder_pairs(ctx, hooks, explained)
    if not pairs:
        raise Skip("needs two coders at different layers with two or more explanations each; the run's coders: "
                   + (", ".join(f"{n} ({hooks[n]}, {len(explained.get(n, {}))} explained)" for n in hooks) or "none"))
    from lantern.score.embedders import make_embedder

    settings = ctx.cfg.scoring
    embedder = make_embedder(settings.embedder, ctx.subject() if settings.embedder == "subject" else None,
                             settings.embedding_layer)
    names = {n for pair in pairs for n in pair}
    latents = {n: sorted(explained[n]) for n in names}
    texts = [explained[n][latent] for n in sorted(names) for latent in latents[n]]
    vectors, _ = embedder.embed(texts)
    vectors = unit_rows(vectors - vectors.mean(axis=0))
    by_coder, start = {}, 0
    for n in sorted(names):
        by_coder[n] = vectors[start:start + len(latents[n])]
        start += len(latents[n])
    decoders = _decoders(ctx, names)
    rng = np.random.default_rng(ctx.seed)
    result = Analysed()
    summary, pair_rows, panels = [], [], []
    for a, b in pairs:
        ea, eb = by_coder[a], by_coder[b]
        text = compare_sets(ea, eb, rng, _repeats(len(ea), len(eb), ea.shape[1]))
        row = {"coder_a": a, "coder_b": b, "hookpoint_a": hooks[a], "hookpoint_b": hooks[b], "latents_a": len(ea),
               "latents_b": len(eb), "matched": len(text["matched"]), "embedder": embedder.name,
               "matched_mean": float(text["matched"].mean()), "matched_median": float(np.median(text["matched"])),
               "random_pair_mean": float(text["baseline"].mean()), "close_threshold": text["threshold"],
               "fraction_close": text["fraction_close"], "rotated_null_matched_mean": float(text["null"].mean()),
               "rotated_null_sd": float(text["null"].std(ddof=1)) if len(text["null"]) > 1 else np.nan,
               "rotated_null_repeats": len(text["null"])}
        dec = None
        da, db = decoders.get(a), decoders.get(b)
        if da is not None and db is not None and da.shape[1] == db.shape[1]:
            ua, ub = unit_rows(da[latents[a]]), unit_rows(db[latents[b]])
            dec = compare_sets(ua, ub, rng, _repeats(len(ua), len(ub), ua.shape[1]))
            cos_of_text = (ua @ ub.T)[text["rows"], text["cols"]]
            same = set(zip(dec["rows"].tolist(), dec["cols"].tolist()))
            row.update(decoder_cosine_of_explanation_matches=float(cos_of_text.mean()),
                       decoder_matched_mean=float(dec["matched"].mean()),
                       decoder_random_pair_mean=float(dec["baseline"].mean()),
                       decoder_close_threshold=dec["threshold"], decoder_fraction_close=dec["fraction_close"],
                       decoder_rotated_null_matched_mean=float(dec["null"].mean()),
                       explanation_and_decoder_matches_agree=float(np.mean(
                           [(i, j) in same for i, j in zip(text["rows"].tolist(), text["cols"].tolist())])))
        else:
            cos_of_text = np.full(len(text["matched"]), np.nan)
            why = ("no decoder directions" if da is None or db is None else
                   f"decoders write to spaces of different width ({da.shape[1]} vs {db.shape[1]})")
            result.notes.append(f"{a} vs {b}: decoder-direction similarity left out ({why})")
        row.update(matched_pairs(ctx, a, b, latents, ea, eb, rng))
        summary.append(row)
        for i, j, s, c in zip(text["rows"], text["cols"], text["matched"], cos_of_text):
            la, lb = latents[a][i], latents[b][j]
            pair_rows.append({"coder_a": a, "coder_b": b, "latent_a": la, "latent_b": lb,
                              "explanation_a": explained[a][la], "explanation_b": explained[b][lb],
                              "similarity": float(s), "close": bool(s > text["threshold"]),
                              "decoder_cosine": float(c)})
        panels.append((a, b, text, dec))
    write_table(ctx, NAME, summary, result)
    write_table(ctx, PAIRS, pair_rows, result)
    _plot(ctx, panels, hooks, result)
    result.n = len(pair_rows)
    return result


def _hist(ax, found: dict, label: str) -> None:
    bins = np.linspace(-1, 1, 41)
    ax.hist(found["baseline"], bins=bins, density=True, alpha=0.5, color="tab:grey", label="every cross pair")
    ax.hist(found["matched"], bins=bins, density=True, alpha=0.6, color="tab:blue", label="Hungarian matches")
    ax.axvline(found["threshold"], color="black", linestyle="--", linewidth=0.8,
               label=f"p{CLOSE_PERCENTILE} of rotated matches ({found['fraction_close']:.0%} of matches above)")
    if len(found["null"]):
        ax.axvline(found["null"].mean(), color="tab:red", linewidth=0.8, label="mean match after rotation")
    ax.set_xlabel(f"cosine similarity of {label}")
    ax.set_ylabel("density")
    ax.legend(fontsize=6)


def _plot(ctx: Context, panels, hooks, result: Analysed) -> None:
    fig, axes = subplots(2 * len(panels), width=4.4, height=3.4, ncols=2)
    for k, (a, b, text, dec) in enumerate(panels):
        ax_t, ax_d = axes[2 * k], axes[2 * k + 1]
        _hist(ax_t, text, "explanations")
        ax_t.set_title(f"{a} ({hooks[a]}) ↔ {b} ({hooks[b]})", fontsize=8)
        if dec is not None:
            _hist(ax_d, dec, "decoder directions")
            ax_d.set_title(f"decoders: {a} ↔ {b}", fontsize=8)
        else:
            ax_d.set_visible(False)
    write_figure(ctx, NAME, fig, result)
