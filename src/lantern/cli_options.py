"""The command line's options, defined once, and option groups: several commands take the same LLM and executor
options, which reach each command as one typed value instead of eight parameters."""
from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

from lantern.errors import LanternError

RunDir = typer.Option(None, "--run-dir", help="Run directory (default: runs/COMMAND-TIMESTAMP).")
ExistingRunDir = typer.Option(..., "--run-dir", help="Run directory of an earlier command (its config.json is used).")
ModelOpt = typer.Option("embedded", "--model", help="Subject model: `embedded` (Gemma 3 270M), a local directory "
                                                     "or a Hugging Face hub id.")
CorpusOpt = typer.Option("embedded", "--corpus", help="`embedded` (KJV Bible + Python docs), a text/jsonl/parquet "
                                                       "file or folder, or a Hugging Face dataset name.")
CodersOpt = typer.Option("sae,neurons,neurons-topk", "--coders", help=(
    "Comma list of: sae (the shipped SAE at layer 6), sae-l8 (the shipped SAE at layer 8), sae-w2048 (a 2,048-latent SAE at layer 6), neurons (MLP neurons at --layer), neurons-topk[:K] (neurons "
    "kept to the K strongest per token, default 32), random[:N[:K]] (N random directions, a control), planted "
    "(latents with known rules, as `validate` uses), or a folder of a sparsify or SAELens checkpoint; a folder "
    "with several hookpoints takes PATH:HOOK to pick one."))
LayerOpt = typer.Option(6, "--layer", help="Layer of the neuron coders (0-based).")
TokensOpt = typer.Option(65_536, "--tokens", help="Tokens of the corpus to cache.")
LatentsOpt = typer.Option(3, "--latents", help="Latents to explain and score per coder (3 keeps the default run "
                                                "under 15 min on 2 CPU cores with the embedded 1.5B model).")
SeedOpt = typer.Option(0, "--seed", help="Seed of every random choice (latents sampled, windows drawn, negatives, "
                                          "shuffled baselines): the same seed gives the same run.")
BatchOpt = typer.Option(16, "--batch-size", help="Sequences per forward pass when caching.")
DtypeOpt = typer.Option("float16", "--value-dtype", help="Cached activation precision: float16 or bfloat16.")
RunMbOpt = typer.Option(64.0, "--run-mb", help="Cache writer memory per coder (MB) before a sorted run is spilled.")
SetOpt = typer.Option(None, "--set", help="Change one setting, section.name=value (repeatable); sections records, "
                                          "explainer, scoring; e.g. --set records.n_test_per_decile=2 --set "
                                          "records.explain_sampling=quantiles --set explainer.show_activations=true. "
                                          "Records settings only before records are built.")
ExplainerOpt = typer.Option(None, "--explainer", help="default, activations, cot, contrastive, output or ensemble "
                                                      "(default: the run's explainer, else default).")
CandidatesOpt = typer.Option(None, "--candidates", help="Explanations sampled per latent, best kept on validation "
                                                        "windows (default: the run's, else 1).")
ScorersOpt = typer.Option(None, "--scorers", help="Comma list of detection, fuzzing, simulation, surprisal, embedding, "
                                                  "intruder, intervention (default: the run's, else detection,fuzzing).")
KLOpt = typer.Option(None, "--intervention-kl", help="Target next-token KL divergences (nats) the intervention scorer "
                                                     "steers each latent to, comma-separated (default 0.5,1,3).")
PerPromptOpt = typer.Option(None, "--examples-per-prompt", help="Detection/fuzzing texts per prompt: 1 = one-token "
                                                               "answers read from log-probs (default), N = one list "
                                                               "of N 0/1 verdicts per prompt.")


@dataclass(frozen=True)
class Group:
    """Options that reach a command as one value: `build(**values)` of the options' values."""

    options: dict[str, tuple[Any, Any]]
    """Parameter name → (annotation, typer.Option)."""
    build: Callable[..., Any]
    panel: str
    """The heading the options stand under in `--help`."""

    def __post_init__(self) -> None:
        for _, option in self.options.values():
            option.rich_help_panel = self.panel


def grouped(name: str, group: Group):
    """Give the command the group's options in place of its parameter `name`, which receives `group.build(...)`.
    Typer reads the options from the wrapper's signature."""

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(fn)
        kept = [p.replace(annotation=hints.get(p.name, p.annotation))
                for p in signature.parameters.values() if p.name != name]
        added = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
                 for key, (annotation, option) in group.options.items()]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            kwargs[name] = group.build(**{key: kwargs.pop(key) for key in group.options})
            return fn(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=kept + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in kept + added}
        del wrapper.__wrapped__  # typer and inspect read the new signature, not the function's own
        return wrapper

    return decorate


def _llm_options(llm_url=None, llm_model=None, llm_api=None, llm_key_env=None, llm_backend=None, llm_concurrency=None,
                 llm_prompt_logprobs=None, llm_wait=None) -> dict:
    """The command's LLM options by LLMConfig field (None: not given)."""
    return {"url": llm_url, "model": llm_model, "api": llm_api, "api_key_env": llm_key_env, "backend": llm_backend,
            "concurrency": llm_concurrency, "prompt_logprobs": llm_prompt_logprobs, "outage_wait": llm_wait}


LLM_OPTIONS = Group({
    "llm_url": (Optional[str], typer.Option(None, "--llm-url", help="OpenAI-compatible server URL (vLLM, llama.cpp, "
                                            "Ollama, OpenRouter), e.g. http://127.0.0.1:8000/v1; several, "
                                            "comma-separated, share the calls.")),
    "llm_model": (Optional[str], typer.Option(None, "--llm-model", help="Model name on the server; in-process: "
                                              "embedded (Qwen2.5-Coder-1.5B-Instruct via llama.cpp, the default), "
                                              "embedded-0.5b, a .gguf file, subject (the subject model itself) or a "
                                              "Hugging Face directory or id.")),
    "llm_api": (Optional[str], typer.Option(None, "--llm-api", help="completions or chat (default: the run's, else "
                                            "completions; HTTP servers only).")),
    "llm_key_env": (Optional[str], typer.Option(None, "--llm-key-env", help="Environment variable that holds the API "
                                                "key (default: the run's, else OPENAI_API_KEY; HTTP servers only).")),
    "llm_backend": (Optional[str], typer.Option(None, "--llm-backend", help="auto (http with --llm-url; llama.cpp for "
                                                "embedded LLMs and .gguf files; else transformers), llama, "
                                                "transformers, http or vllm (offline engine, GPU machines); "
                                                "default auto.")),
    "llm_concurrency": (Optional[int], typer.Option(None, "--llm-concurrency", help="LLM calls in flight at once, a "
                                                    "server's capacity (default: the run's, else 8; HTTP servers "
                                                    "only).")),
    "llm_prompt_logprobs": (Optional[bool], typer.Option(None, "--llm-prompt-logprobs/--no-llm-prompt-logprobs",
                                                         help="The server returns prompt log-probs via `echo` (HTTP "
                                                              "completions servers only).")),
    "llm_wait": (Optional[float], typer.Option(None, "--llm-wait", help="Seconds to wait, in all, for a server that "
                                               "went away mid-run to come back before stopping (default: the run's, "
                                               "else 300).")),
}, _llm_options, "LLM (explainer and judge)")


def _executor_options(executor: str = "local", ray_address: str | None = None, partitions: int = 0):
    """Where partitions run (never saved: scheduling does not change what a run computes)."""
    from lantern.executors.base import ExecutorConfig

    if ray_address and executor != "ray":
        raise LanternError("--ray-address needs --executor ray")
    if partitions < 0:
        raise LanternError(f"--partitions must be 0 (automatic) or more, not {partitions}")
    return ExecutorConfig(kind=executor, address=ray_address, partitions=partitions)


EXECUTOR_OPTIONS = Group({
    "executor": (str, typer.Option("local", "--executor", help="Where partitions run: local (this process) or ray.")),
    "ray_address": (Optional[str], typer.Option(None, "--ray-address", help="Ray cluster address, e.g. "
                                                "ray://head:10001 (default with --executor ray: start a local Ray).")),
    "partitions": (int, typer.Option(0, "--partitions", help="Partitions per stage (0: 1 locally, 2 per CPU on "
                                                             "Ray).")),
}, _executor_options, "Where partitions run")



def _assignments(section: str, **given) -> list[str]:
    """Options given (not None) as `section.name=value` assignments, applied and checked as `--set` is."""
    return [f"{section}.{name}={str(value).lower() if isinstance(value, bool) else value}"
            for name, value in given.items() if value is not None]


RECORD_OPTIONS = Group({
    "explain_sampling": (Optional[str], typer.Option(None, "--explain-sampling", help="Explain windows: top "
                                                     "(strongest), random, or quantiles (equal numbers per decile).")),
    "ctx_len": (Optional[int], typer.Option(None, "--ctx-len", help="Tokens per window (default 32).")),
    "n_explain": (Optional[int], typer.Option(None, "--explain-examples", help="Activating windows shown to the "
                                              "explainer (default 20).")),
    "n_test_per_decile": (Optional[int], typer.Option(None, "--test-per-decile", help="Activating test windows per "
                                                      "activation decile (default 1).")),
    "n_validation_per_decile": (Optional[int], typer.Option(None, "--validation-per-decile", help="Validation "
                                                            "windows per decile, for choosing among candidates "
                                                            "(default 0).")),
    "n_negatives": (Optional[int], typer.Option(None, "--random-negatives", help="Random verified-zero windows per "
                                                "scored split (default 6).")),
    "n_similar_negatives": (Optional[int], typer.Option(None, "--similar-negatives", help="Hard negatives most "
                                                        "similar to the explain windows (default 4).")),
    "n_neighbour_negatives": (Optional[int], typer.Option(None, "--neighbour-negatives", help="Windows where a "
                                                          "neighbour latent fires and this one does not (default 4).")),
    "match_latents_to": (Optional[str], typer.Option(None, "--match-latents-to", help="A coder of the run: the "
                                                     "others explain the latents whose decoder directions best match "
                                                     "its sampled ones, one to one (cross-layer overlap, pair by "
                                                     "pair).")),
}, lambda **given: _assignments("records", **given), "Records (the windows each latent gets)")


EXPLAIN_SETTING_OPTIONS = Group({
    "show_activations": (Optional[bool], typer.Option(None, "--show-activations/--hide-activations", help="List "
                                                      "the marked tokens with their activation (0-10) in the "
                                                      "explainer's prompt (default: hidden).")),
    "mark_threshold": (Optional[float], typer.Option(None, "--mark-threshold", help="Mark tokens above this "
                                                     "fraction of the window's maximum activation (default 0.3).")),
}, lambda **given: _assignments("explainer", **given), "Explainer settings")
