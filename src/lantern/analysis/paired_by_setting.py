"""One varied setting at a time, across a grid of several: each value against the baseline's value, paired over
the variants that differ in that setting alone (every combination of the other settings is a context of its own,
so a latent is only ever paired with itself under the same other settings). With one setting varied this is the
per-variant comparison and is not repeated."""
from __future__ import annotations

from pathlib import Path

from lantern.analysis.paired import PairedRow, Values, paired_rows, score_values
from lantern.pipeline.files import SCORES


def _contextual(values: Values, context: tuple) -> Values:
    """The run's values with every latent key prefixed by the other settings' values."""
    return {group: {(context, key): value for key, value in latents.items()} for group, latents in values.items()}


def _merge(into: Values, values: Values) -> None:
    for group, latents in values.items():
        into.setdefault(group, {}).update(latents)


def setting_rows(runs: dict[str, Path], settings: dict[str, dict[str, str]], baseline: str, resamples: int,
                 seed: int) -> list[PairedRow]:
    """Per varied setting and each of its values other than the baseline's: the paired rows (label
    `key=value vs base`), pooled over the contexts where both variants scored. Empty for a one-setting grid."""
    keys = list(settings.get(baseline, {}))
    if len(keys) < 2:
        return []
    scored = {label: score_values(Path(run)) for label, run in runs.items()
              if label in settings and (Path(run) / SCORES).exists()}
    rows: list[PairedRow] = []
    for key in keys:
        base_value = settings[baseline][key]
        values = list(dict.fromkeys(s[key] for s in settings.values() if s[key] != base_value))
        for value in values:
            merged_base: Values = {}
            merged_variant: Values = {}
            for a in scored:
                if settings[a][key] != base_value:
                    continue
                context = tuple((k, settings[a][k]) for k in keys if k != key)
                partner = next((b for b in scored if settings[b][key] == value
                                and all(settings[b][k] == v for k, v in context)), None)
                if partner is not None:
                    _merge(merged_base, _contextual(scored[a], context))
                    _merge(merged_variant, _contextual(scored[partner], context))
            rows += paired_rows(f"{key}={value} vs {base_value}", merged_base, merged_variant, resamples, seed)
    return rows
