"""How a command's options become a run's config: opening a new or saved run (refusing options that contradict
what its cache and records were made with), applying LLM options, `--set` settings, the explainer and the
scorers. The config itself (config.py) is plain typed data; every rule about changing it lives here."""
from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

from lantern.config import CONFIG_FILE, LLMConfig, RunConfig
from lantern.errors import LanternError


def load_run(run_dir: Path) -> RunConfig:
    """The saved config of an existing run directory, or a clear error."""
    if not (Path(run_dir) / CONFIG_FILE).exists():
        raise LanternError(f"{run_dir} is not a lantern run directory (no {CONFIG_FILE}); pass the directory "
                           f"`lantern run` or `lantern cache` wrote")
    return RunConfig.load(run_dir)


def refuse_conflicts(cfg: RunConfig, asked: dict, new_run_hint: str = "Use another --run-dir for a new run") -> None:
    """An existing run asked for another model, corpus, coder set, ...: refused, since its cache and records
    were made with the saved settings."""
    conflicts = [f"--{key.replace('_', '-')} {value!r} (the run has {getattr(cfg, key)!r})"
                 for key, value in asked.items() if value != getattr(cfg, key)]
    if conflicts:
        raise LanternError(f"{cfg.path} is an existing run made with other settings: {'; '.join(conflicts)}. "
                           f"{new_run_hint}")


def open_run(run_dir: Path, llm: dict, **settings) -> RunConfig:
    """A new run's config, or the saved one of an existing run directory; `settings` are the command's run
    options (a value equal to the default counts as not given), `llm` its LLM options (None: not given)."""
    if isinstance(settings.get("coders"), str):
        settings["coders"] = [c.strip() for c in settings["coders"].split(",") if c.strip()]
    if (Path(run_dir) / CONFIG_FILE).exists():
        cfg = RunConfig.load(run_dir)
        defaults = RunConfig(run_dir=str(run_dir))
        refuse_conflicts(cfg, {key: value for key, value in settings.items() if value != getattr(defaults, key)})
        cfg.llm = with_llm_options(cfg.llm, **llm)
        return cfg
    return RunConfig(run_dir=str(run_dir), llm=with_llm_options(LLMConfig(), **llm), **settings)


def records_built(cfg: RunConfig) -> bool:
    from lantern.pipeline.files import RECORDS

    return any((cfg.path / RECORDS).glob("*.parquet"))


def apply_llm_options(cfg: RunConfig, llm: dict) -> RunConfig:
    """The command's LLM options on the run's saved LLM settings, saved when they change (Ray workers and later
    commands read them)."""
    updated = with_llm_options(cfg.llm, **llm)
    if updated != cfg.llm:
        cfg.llm = updated
        cfg.save()
    return cfg


def apply_explainer(cfg: RunConfig, explainer: str | None, candidates: int | None, records_pending: bool) -> None:
    """Apply --explainer / --candidates to the config (explanations can be redone with another explainer at any
    time). Records about to be built get what the explainer needs if they would lack it: explain negatives for
    a contrastive explainer, validation windows (to choose among candidates) for more than one candidate."""
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


def apply_scorers(cfg: RunConfig, scorers: str | None, intervention_kl: str | None = None,
                  examples_per_prompt: int | None = None) -> None:
    """Apply --scorers, --intervention-kl and --examples-per-prompt (checked before any model is loaded);
    scores can be redone with other scorers any time."""
    from lantern.score.registry import parse_scorers

    if scorers is not None:
        cfg.scorers = parse_scorers(scorers)
    if intervention_kl is not None:
        try:
            targets = tuple(float(x) for x in intervention_kl.split(",") if x.strip())
        except ValueError:
            raise LanternError(f"--intervention-kl takes comma-separated numbers (nats), not {intervention_kl!r}") from None
        cfg.scoring = replace(cfg.scoring, intervention_targets=targets)
    if examples_per_prompt is not None:
        cfg.scoring = replace(cfg.scoring, examples_per_prompt=examples_per_prompt)
    cfg.scoring.check()


NEW_LLM_OPTIONS = ("url", "model", "backend")
"""Options that name another LLM: given any of them, the other settings start from the defaults, not the run's."""
SERVER_OPTIONS = {"api": "--llm-api", "api_key_env": "--llm-key-env", "prompt_logprobs": "--llm-prompt-logprobs",
                  "concurrency": "--llm-concurrency", "outage_wait": "--llm-wait"}
"""Options only an HTTP server uses: given to an in-process backend they would do nothing, so they are refused."""


def with_llm_options(saved: LLMConfig, **given) -> LLMConfig:
    """The LLM settings a command runs with: every option the user gave (not None) takes effect, or is refused
    with the reason. Naming another LLM (a `url`, `model` or `backend` other than the saved one) starts from the
    defaults; otherwise the given options change the run's saved settings (so `--llm-api chat` alone switches
    the run's server to chat, and repeating the run's own `--llm-url` changes nothing)."""
    from lantern.llm.factory import resolve_backend

    given = {key: value for key, value in given.items() if value is not None}
    unknown = set(given) - set(LLMConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"not LLM settings: {sorted(unknown)}")
    another_llm = any(key in given and given[key] != getattr(saved, key) for key in NEW_LLM_OPTIONS)
    base = LLMConfig() if another_llm else saved
    cfg = replace(base, **given)
    if cfg.api not in ("completions", "chat"):
        raise LanternError(f"--llm-api must be completions or chat, not {cfg.api!r}")
    if cfg.concurrency < 1:
        raise LanternError(f"--llm-concurrency must be at least 1, not {cfg.concurrency}")
    backend = resolve_backend(cfg)
    if backend != "http":
        idle = [flag for key, flag in SERVER_OPTIONS.items()
                if key in given and given[key] != getattr(LLMConfig(), key)]
        if idle:
            raise LanternError(f"{', '.join(idle)} only apply to an HTTP server (--llm-url); this run's LLM is "
                               f"in-process ({backend}: {cfg.model or 'embedded'}), which answers one call at a "
                               f"time through its own API and has no key. Drop the option, or give --llm-url")
    return cfg


SETTING_SECTIONS = ("records", "explainer", "scoring")
"""The nested settings `--set section.name=value` may change (LLM settings have their own options)."""


def _optional_type(section_cls, name: str):
    """The non-None type of an `X | None` setting (None when the annotation says nothing more)."""
    import typing

    hint = typing.get_type_hints(section_cls).get(name)
    kinds = [k for k in typing.get_args(hint) if k is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, str, bool) else None


def _parse_value(text: str, default, where: str, kind=None):
    """`text` as the type of the setting's default (bool, int, float, str, or a comma list for tuples); a
    setting whose default is None takes `kind` (from its annotation), and `none` sets it back to None."""
    if kind is not None and text.lower() in ("none", "null"):
        return None
    if default is None:
        default = kind("0") if kind in (int, float) else (False if kind is bool else "")
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, (tuple, list)):
            kind = type(default[0]) if default else str
            return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        return type(default)(text)
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise LanternError(f"--set {where}={text!r}: expected {kind} (the default is {default!r})") from None


def with_settings(cfg: RunConfig, assignments: list[str], records_built: bool = False) -> RunConfig:
    """The config with each `section.name=value` applied (sections: records, explainer, scoring), typed by the
    setting's default and checked by its section. Records settings cannot change once records are built: the
    examples would no longer match the config (use a new --run-dir)."""
    changes: dict[str, dict] = {}
    for assignment in assignments:
        where, sep, text = assignment.partition("=")
        section, dot, name = where.strip().partition(".")
        if not sep or not dot or section not in SETTING_SECTIONS:
            raise LanternError(f"--set {assignment!r}: expected section.name=value with section one of "
                               f"{', '.join(SETTING_SECTIONS)} (e.g. records.n_test_per_decile=2)")
        current = getattr(cfg, section)
        names = [f.name for f in dataclasses.fields(current)]
        if name not in names:
            raise LanternError(f"--set {assignment!r}: {section} has no setting {name!r}; it has {', '.join(names)}")
        changes.setdefault(section, {})[name] = _parse_value(text.strip(), getattr(current, name), where,
                                                             _optional_type(type(current), name))
    records = changes.get("records", {})
    if "ctx_len" in records and "tokens_before" not in records and cfg.records.tokens_before == cfg.records.ctx_len // 2:
        records["tokens_before"] = records["ctx_len"] // 2  # a window centred before stays centred at any length
    for section, values in changes.items():
        updated = replace(getattr(cfg, section), **values)
        if section == "records" and records_built and updated != cfg.records:
            raise LanternError(f"--set records.*: {cfg.path} already has records built with "
                               f"{', '.join(f'{k}={getattr(cfg.records, k)!r}' for k in values)}; use a new --run-dir")
        negative = [k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0]
        if negative:
            raise LanternError(f"--set {section}.{negative[0]}: must not be negative")
        if section == "records":
            from lantern.records.build import check_window_fits

            check_window_fits(updated, cfg.seq_len)
        check = getattr(updated, "check", None)
        if callable(check):
            check()
        setattr(cfg, section, updated)
    return cfg
