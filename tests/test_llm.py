"""The OpenAI-compatible HTTP client against a real local HTTP server, and the persistent response cache."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lantern.errors import LanternError
from lantern.llm.base import Request
from lantern.llm.http_client import HTTPClient
from lantern.llm.response_cache import CachedClient

SECRET = "sk-lantern-test-0123456789abcdef"


def completions_answer(prompt: str, top: dict[str, float | None] | None = None) -> dict:
    """What vLLM / llama.cpp answer on /v1/completions (top logprobs of each generated token)."""
    top = top if top is not None else {" Yes": math.log(0.7), " No": math.log(0.2), " yes": math.log(0.05)}
    return {"id": "cmpl-1", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": f"answer to {prompt}", "finish_reason": "length",
                         "logprobs": {"tokens": [" Yes"], "token_logprobs": [math.log(0.7)], "top_logprobs": [top]}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 3, "total_tokens": 0}}


def chat_answer(prompt: str, top: dict[str, float | None] | None = None) -> dict:
    top = top if top is not None else {"Yes": math.log(0.6), "No": math.log(0.3)}
    entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()]
    return {"id": "chat-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": f"answer to {prompt}"},
                         "logprobs": {"content": [{"token": "Yes", "logprob": math.log(0.6), "top_logprobs": entries}]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


class FakeOpenAI:
    """A real HTTP server on 127.0.0.1 that records every request; `script` decides each answer."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.script = self.default
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                            "time": time.monotonic()})
                    n = len(server.requests)
                status, headers, payload = server.script(self.path, body, n)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def default(path, body, n):
        if path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
            return 200, {}, chat_answer(prompt)
        return 200, {}, completions_answer(body["prompt"])

    def prompts(self) -> list[str]:
        return [r["body"].get("prompt") or r["body"]["messages"][-1]["content"] for r in self.requests]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeOpenAI()
    yield s
    s.close()


def client(server, **kwargs) -> HTTPClient:
    kwargs = {"backoff": 0.001, "max_retries": 3, "concurrency": 4, "api_key_env": "LANTERN_TEST_NO_KEY", **kwargs}
    return HTTPClient(server.url, "test-model", **kwargs)


def test_completions_answer_with_top_logprobs(server):
    http = client(server)
    prompts = [f"prompt {i}" for i in range(9)]
    responses = http.complete([Request(prompt=p, max_tokens=1, top_logprobs=5, stop=()) for p in prompts])
    assert [r.text for r in responses] == [f"answer to {p}" for p in prompts]  # in request order
    for r, p in zip(responses, prompts):
        assert r.ok and r.first_token_logprobs == pytest.approx(
            {" Yes": math.log(0.7), " No": math.log(0.2), " yes": math.log(0.05)})
        assert r.prompt_tokens == len(p.split()) and r.completion_tokens == 3 and r.seconds > 0
    assert sorted(server.prompts()) == sorted(prompts)
    first = server.requests[0]
    assert first["path"] == "/v1/completions"
    body = first["body"]
    assert body["model"] == "test-model" and body["max_tokens"] == 1 and body["logprobs"] == 5
    assert body["temperature"] == 0.0 and "stop" not in body
    assert "authorization" not in {k.lower() for k in first["headers"]}


def test_chat_answer_with_top_logprobs(server):
    http = client(server, api="chat")
    [r] = http.complete([Request(prompt="is it?", max_tokens=4, top_logprobs=3)])
    assert r.ok and r.text == "answer to is it?"
    assert r.first_token_logprobs == pytest.approx({"Yes": math.log(0.6), "No": math.log(0.3)})
    assert (r.prompt_tokens, r.completion_tokens) == (7, 2)
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "is it?"}]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["stop"] == ["\n"]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_impossible_tokens_are_dropped_from_logprobs(server, api):
    top = {"Yes": -0.1, "No": None, "Maybe": float("-inf")}
    answer = chat_answer if api == "chat" else completions_answer
    server.script = lambda path, body, n: (200, {}, answer("x", top))
    [r] = client(server, api=api).complete([Request(prompt="x", max_tokens=1, top_logprobs=3)])
    assert r.first_token_logprobs == {"Yes": -0.1}


def test_429_with_retry_after_then_success(server):
    def script(path, body, n):
        if n == 1:
            return 429, {"Retry-After": "0.4"}, {"error": "slow down"}
        if n == 2:
            return 503, {}, {"error": "overloaded"}
        return FakeOpenAI.default(path, body, n)

    server.script = script
    [r] = client(server).complete([Request(prompt="p", max_tokens=1)])
    assert r.ok and r.text == "answer to p"
    assert len(server.requests) == 3
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.4  # Retry-After was honoured
    assert server.requests[2]["time"] - server.requests[1]["time"] < 0.4  # the small backoff otherwise


def test_retries_give_up_with_an_error_and_client_errors_are_not_retried(server):
    server.script = lambda path, body, n: (500, {}, {"error": "down"})
    [r] = client(server, max_retries=2).complete([Request(prompt="p", max_tokens=1)])
    assert not r.ok and r.error == "HTTP 500" and r.text == ""
    assert len(server.requests) == 3

    server.requests.clear()
    server.script = lambda path, body, n: (400, {}, {"error": "prompt too long"})
    [r] = client(server, max_retries=2).complete([Request(prompt="p", max_tokens=1)])
    assert r.error.startswith("HTTP 400") and "prompt too long" in r.error
    assert len(server.requests) == 1


def test_malformed_answers_become_errors_and_the_run_goes_on(server):
    def script(path, body, n):
        if body["prompt"] == "bad json":
            return 200, {}, b"{not json"
        if body["prompt"] == "no choices":
            return 200, {}, {"object": "text_completion"}
        return FakeOpenAI.default(path, body, n)

    server.script = script
    prompts = ["good 1", "bad json", "no choices", "good 2"]
    responses = client(server, max_retries=1).complete([Request(prompt=p, max_tokens=1) for p in prompts])
    assert [r.ok for r in responses] == [True, False, False, True]
    assert responses[0].text == "answer to good 1" and responses[3].text == "answer to good 2"
    for r in responses[1:3]:
        assert r.error.startswith("malformed answer from server") and r.text == ""


def test_nothing_listening_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    http = HTTPClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.001)
    with pytest.raises(LanternError, match=rf"LLM server at http://127.0.0.1:{port}/v1 refuses connections"):
        http.complete([Request(prompt="p", max_tokens=1), Request(prompt="q", max_tokens=1)])


def test_api_key_goes_in_the_header_and_nowhere_else(server, monkeypatch, tmp_path):
    monkeypatch.setenv("LANTERN_TEST_KEY", SECRET)
    http = client(server, api_key_env="LANTERN_TEST_KEY")
    monkeypatch.delenv("LANTERN_TEST_KEY")  # read once, at construction

    def script(path, body, n):
        if body["prompt"] == "fail":
            return 401, {}, {"error": "invalid key"}
        return FakeOpenAI.default(path, body, n)

    server.script = script
    cached = CachedClient(http, tmp_path / "llm_cache.sqlite")
    responses = cached.complete([Request(prompt="ok", max_tokens=1, top_logprobs=2), Request(prompt="fail", max_tokens=1)])
    assert responses[0].ok and not responses[1].ok
    assert {r["headers"].get("Authorization") for r in server.requests} == {f"Bearer {SECRET}"}
    for r in responses:
        assert SECRET not in repr(dataclasses.asdict(r))
    cached.close()
    for f in tmp_path.iterdir():
        assert SECRET.encode() not in f.read_bytes()


# --- the response cache -------------------------------------------------------------------------


def test_second_cached_client_answers_from_the_cache(server, tmp_path):
    def script(path, body, n):
        if body["prompt"].startswith("fail"):
            return 400, {}, {"error": "nope"}
        return FakeOpenAI.default(path, body, n)

    server.script = script
    db = tmp_path / "run" / "llm_cache.sqlite"
    requests = [Request(prompt=p, max_tokens=1, top_logprobs=3) for p in ("a", "fail b", "c")]
    first = CachedClient(client(server), db)
    fresh = first.complete(requests)
    assert [r.ok for r in fresh] == [True, False, True] and not any(r.cached for r in fresh)
    assert len(server.requests) == 3 and (first.hits, first.misses) == (0, 3)

    second = CachedClient(client(server), db)  # a new connection, as in a rerun; the first is still open
    again = second.complete(requests)
    assert server.prompts()[3:] == ["fail b"]  # only the failed request went to the server again
    assert [r.cached for r in again] == [True, False, True]
    assert (second.hits, second.misses) == (2, 1)
    for old, new in zip(fresh, again):
        assert (new.text, new.first_token_logprobs, new.prompt_tokens, new.error) == \
               (old.text, old.first_token_logprobs, old.prompt_tokens, old.error)

    # The key is the whole request and the model: any difference is a miss.
    other = [Request(prompt="a", max_tokens=2, top_logprobs=3), Request(prompt="a", max_tokens=1, top_logprobs=3,
                                                                        temperature=0.5)]
    assert not any(r.cached for r in second.complete(other))
    third = CachedClient(HTTPClient(server.url, "another-model", backoff=0.001), db)
    assert not third.complete(requests[:1])[0].cached
    assert len(server.requests) == 4 + 2 + 1
    for c in (first, second, third):
        c.close()


def test_backend_choice_and_clear_errors(tmp_path, server):
    from lantern.config import LLMConfig
    from lantern.llm.factory import make_client

    client = make_client(LLMConfig(url=server.url, model="m", prompt_logprobs=True), tmp_path)
    assert client.backend == "openai-http" and client.capabilities.prompt_logprobs
    client.close()
    chat = make_client(LLMConfig(url=server.url, model="m", api="chat", prompt_logprobs=True), tmp_path)
    assert not chat.capabilities.prompt_logprobs  # echo exists only on the completions API
    with pytest.raises(LanternError, match="prompt log-probs were asked"):
        chat.complete([Request(prompt="p", max_tokens=1, prompt_logprobs=True)])
    chat.close()
    with pytest.raises(LanternError, match="unknown LLM backend 'gpt'"):
        make_client(LLMConfig(backend="gpt"), tmp_path)
    with pytest.raises(LanternError, match="needs --llm-url"):
        make_client(LLMConfig(backend="http"), tmp_path)
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(LanternError, match=r"lantern-interp\[vllm\]` on a GPU machine"):
            make_client(LLMConfig(backend="vllm", model="some/model"), tmp_path)
