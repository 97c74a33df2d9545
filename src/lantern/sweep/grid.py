"""A sweep's grid: the settings it varies (`--vary section.name=v1,v2` or a TOML file) and the variants they make.

Every value is checked against the run config before anything runs, so a typo or a value of the wrong type is
one clear line, not a failure an hour into the sweep."""
from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lantern.config import RunConfig
from lantern.configure import SETTING_SECTIONS, apply_explainer, with_llm_options, with_settings
from lantern.errors import LanternError

LLM_SETTINGS = ("llm.model",)
"""LLM settings a sweep may vary (the explainer and judge model, for the explainer-size ablation)."""


@dataclass(frozen=True)
class Variant:
    """One cell of the grid: the settings it changes from the sweep's base config."""

    settings: tuple[tuple[str, str], ...]
    """(section.name, value as text) in the order the grid was given."""
    changed: tuple[str, ...] | None = None
    """The settings this variant changes from the ablation's base (None: a full grid, where all of them name it)."""

    @property
    def name(self) -> str:
        """A directory name that says what the variant changed (`explain_sampling=top,show_activations=true`; in an
        ablation only the changed setting, and `base` for the base)."""
        shown = [(k, v) for k, v in self.settings if self.changed is None or k in self.changed]
        text = ",".join(f"{key.split('.', 1)[1]}={value}" for key, value in shown) or "base"
        return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)

    def as_dict(self) -> dict[str, str]:
        return dict(self.settings)


DESIGNS = ("grid", "ablation")


@dataclass
class Grid:
    """Settings varied and their values. `grid`: every combination; `ablation`: the base (each setting's first
    value) and one variant per other value of one setting, the rest at the base (the paper's appendix: each
    choice's effect alone, at a cost that grows with the values, not their product)."""

    vary: dict[str, list[str]] = field(default_factory=dict)
    design: str = "grid"

    @property
    def variants(self) -> list[Variant]:
        keys = list(self.vary)
        if self.design == "grid":
            return [Variant(tuple(zip(keys, values))) for values in itertools.product(*(self.vary[k] for k in keys))]
        base = {key: values[0] for key, values in self.vary.items()}
        out = [Variant(tuple(base.items()), changed=())]
        for key, values in self.vary.items():
            out += [Variant(tuple((base | {key: value}).items()), changed=(key,)) for value in values[1:]]
        return out

    def saved(self) -> dict:
        """As sweep.json holds it."""
        return {"design": self.design, "vary": self.vary}


def parse_vary(options: list[str]) -> Grid:
    """`--vary section.name=v1,v2` (repeatable). Tuple settings take `;` between values, since their own
    elements are comma-separated (`--vary scoring.intervention_targets=0.5,1;3`)."""
    grid = Grid()
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip()
        if not sep or not text.strip():
            raise LanternError(f"--vary {option!r}: expected section.name=value1,value2 (e.g. "
                               f"records.explain_sampling=top,quantiles)")
        separator = ";" if ";" in text else ","
        values = [v.strip() for v in text.split(separator) if v.strip()]
        if key in grid.vary:
            raise LanternError(f"--vary {key} is given twice; list all its values once")
        grid.vary[key] = values
    return grid


def read_grid(path: Path) -> Grid:
    """A TOML file with a `[vary]` table of lists, e.g. `"records.explain_sampling" = ["top", "quantiles"]`."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise LanternError(f"cannot read the sweep grid {path}: {err}") from None
    vary = data.get("vary")
    if not isinstance(vary, dict) or not vary:
        raise LanternError(f"{path}: expected a [vary] table of setting = [values] (e.g. "
                           f"\"records.explain_sampling\" = [\"top\", \"quantiles\"])")
    grid = Grid(design=str(data.get("design", "grid")))
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise LanternError(f"{path}: [vary] {key} must be a non-empty list of values")
        grid.vary[key] = [str(v).lower() if isinstance(v, bool) else
                          ",".join(map(str, v)) if isinstance(v, list) else str(v) for v in values]
    return grid


def apply_variant(base: RunConfig, variant: Variant, run_dir: Path) -> RunConfig:
    """The base config with the variant's settings, for the variant's own run directory (typed and checked as
    `--set` checks them)."""
    cfg = dataclasses.replace(base, run_dir=str(run_dir))
    assignments = [f"{key}={value}" for key, value in variant.settings if key not in LLM_SETTINGS]
    try:
        with_settings(cfg, assignments)
    except LanternError as err:
        raise LanternError(str(err).replace("--set ", "--vary ")) from None
    for key, value in variant.settings:
        if key in LLM_SETTINGS:
            cfg.llm = with_llm_options(cfg.llm, **{key.split(".", 1)[1]: value})
    # records get what the variant's explainer needs (explain negatives for `contrastive`, validation windows for
    # several candidates), so such a variant gets records of its own
    apply_explainer(cfg, None, None, records_pending=True)
    return cfg


def check_grid(base: RunConfig, grid: Grid) -> list[Variant]:
    """Every variant, each checked; unknown settings and values of the wrong type are refused up front."""
    if grid.design not in DESIGNS:
        raise LanternError(f"--design {grid.design!r}: choose {' or '.join(DESIGNS)}")
    if not grid.vary:
        raise LanternError("a sweep needs at least one --vary section.name=v1,v2 (or --grid FILE)")
    for key in grid.vary:
        section = key.split(".", 1)[0]
        if key not in LLM_SETTINGS and section not in SETTING_SECTIONS:
            raise LanternError(f"--vary {key}: a sweep varies records.*, explainer.*, scoring.* settings or "
                               f"{', '.join(LLM_SETTINGS)}")
    variants = grid.variants
    for variant in variants:
        apply_variant(base, variant, Path(base.run_dir) / "check")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise LanternError("two variants of this grid get the same directory name; give distinct values")
    return variants
