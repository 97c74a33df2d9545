"""The LLM layer against a real local server of ours that injects every fault a real endpoint shows: 429 on
every third call, random 5xx, answers slower than the timeout, dropped connections, malformed JSON and
truncated bodies. Nothing is lost, every fault is counted, and the answers equal a clean run's.
Also: a process killed with SIGKILL mid-stage repeats no completed call when run again."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lantern.llm.base import Request
from lantern.llm.http_client import HTTPClient
from lantern.llm.response_cache import CachedClient, ResponseCache, request_key
from test_llm import completions_answer

FAULTS = ("429", "5xx", "slow", "drop", "malformed", "truncated")


class FaultyServer:
    """OpenAI-compatible /v1/completions on 127.0.0.1. `plan(prompt, attempt, call)` names the fault for a call
    (None: answer properly); every injected fault and every proper answer is logged. `answer(prompt)` gives the
    JSON body of a proper answer; `port` 0 picks a free port (a fixed one lets a restarted server take it back)."""

    def __init__(self, plan, delay: float = 0.0, answer=completions_answer, port: int = 0):
        self.plan, self.delay, self.answer = plan, delay, answer
        self.lock = threading.Lock()
        self.calls = 0
        self.attempts: Counter = Counter()
        self.injected: Counter = Counter()
        self.answered: list[str] = []
        self.models: list[str] = ["model-a"]
        """What `GET /v1/models` reports (empty: the server does not list its models)."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["prompt"]
                with server.lock:
                    server.calls += 1
                    call, attempt = server.calls, server.attempts[prompt]
                    server.attempts[prompt] += 1
                    fault = server.plan(prompt, attempt, call)
                    if fault:
                        server.injected[fault] += 1
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "slow":
                    time.sleep(0.8)
                elif server.delay:
                    time.sleep(server.delay)
                status, data, headers = 200, json.dumps(server.answer(prompt)).encode(), {}
                if fault == "429":
                    status, data, headers = 429, b'{"error": "slow down"}', {"Retry-After": "0.05"}
                elif fault == "5xx":
                    status, data = random.choice([500, 502, 503]), b'{"error": "oops"}'
                elif fault == "malformed":
                    data = b'{"choices": [ {"text": "half'
                length = len(data)
                if fault == "truncated":
                    data = data[: len(data) // 2]
                    self.close_connection = True
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if fault is None:
                    with server.lock:
                        server.answered.append(prompt)

            def do_GET(self):  # noqa: N802
                found = self.path.rstrip("/").endswith("/models") and server.models
                data = json.dumps({"data": [{"id": m} for m in server.models]}).encode() if found else b"{}"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chaos(prompt: str, attempt: int, call: int) -> str | None:
    """429 on every third call; besides, the first attempts of most prompts hit one or two of the other faults
    (fixed per prompt, so every kind occurs whatever order the concurrent calls arrive in)."""
    if call % 3 == 0:
        return "429"
    i = int(prompt.split()[-1])
    faults = [FAULTS[1 + i % 5]] if i % 4 else []
    if i % 10 == 3:
        faults.append(FAULTS[1 + (i // 10) % 5])
    return faults[attempt] if attempt < len(faults) else None


REQUESTS = [Request(prompt=f"prompt {i}", max_tokens=1, top_logprobs=3, stop=()) for i in range(40)]


def _client(url: str, **kw) -> HTTPClient:
    return HTTPClient(url, "m", api_key_env="LANTERN_NO_KEY", **{"backoff": 0.01, "max_retries": 8, "concurrency": 8,
                                                                 "timeout": 0.4, **kw})


def test_every_fault_is_absorbed_counted_and_changes_nothing(tmp_path):
    clean_server = FaultyServer(lambda *a: None)
    faulty = FaultyServer(chaos)
    try:
        clean = CachedClient(_client(clean_server.url), tmp_path / "clean.sqlite").complete(REQUESTS)
        cached = CachedClient(_client(faulty.url), tmp_path / "faulty.sqlite")
        answers = cached.complete(REQUESTS)
    finally:
        clean_server.close()
        faulty.close()
    assert all(r.ok for r in answers), [r.error for r in answers if not r.ok]
    assert [(r.text, r.first_token_logprobs) for r in answers] == [(r.text, r.first_token_logprobs) for r in clean]
    assert set(faulty.injected) == set(FAULTS)  # every kind of fault happened
    # each prompt was answered properly exactly once; every injected fault cost (at least) one retry, each
    # named (a pooled connection the server closed can cost one more, which the server never sees)
    assert sorted(faulty.answered) == sorted(r.prompt for r in REQUESTS)
    assert sum(faulty.injected.values()) <= sum(r.attempts - 1 for r in answers) <= sum(faulty.injected.values()) + 5
    assert all(len(r.retry_reasons) == r.attempts - 1 for r in answers)
    reasons = " ".join(reason for r in answers for reason in r.retry_reasons)
    for text in ("HTTP 429", "HTTP 5", "Timeout", "malformed answer"):
        assert text in reasons
    assert cached.cache.count() == len(REQUESTS)


def test_a_call_that_keeps_failing_is_recorded_and_the_run_goes_on(tmp_path):
    server = FaultyServer(lambda prompt, attempt, call: "5xx" if prompt == "prompt 3" else None)
    try:
        cached = CachedClient(_client(server.url, max_retries=2), tmp_path / "c.sqlite")
        answers = cached.complete(REQUESTS[:6])
    finally:
        server.close()
    assert [r.ok for r in answers] == [True, True, True, False, True, True]
    failed = answers[3]
    assert failed.error.startswith("HTTP 5") and failed.attempts == 3 and len(failed.retry_reasons) == 2
    assert cached.cache.count() == 5  # the failure is not cached: the next run asks again


SCRIPT = textwrap.dedent("""
    import sys
    from lantern.llm.base import Request
    from lantern.llm.http_client import HTTPClient
    from lantern.llm.response_cache import CachedClient
    url, db = sys.argv[1], sys.argv[2]
    client = CachedClient(HTTPClient(url, "m", api_key_env="LANTERN_NO_KEY", concurrency=4, backoff=0.01), db)
    answers = client.complete([Request(prompt=f"prompt {i}", max_tokens=1, top_logprobs=3, stop=()) for i in range(120)])
    print(sum(a.ok for a in answers), client.hits, client.misses)
""")


def test_killed_run_repeats_no_completed_call(tmp_path):
    server = FaultyServer(lambda *a: None, delay=0.03)
    db = tmp_path / "run" / "llm_cache.sqlite"
    script = tmp_path / "run_llm.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        proc = subprocess.Popen([sys.executable, str(script), server.url, str(db)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and len(server.answered) < 40 and proc.poll() is None:
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        answered_before = set(server.answered)
        cache = ResponseCache(db)
        identity = HTTPClient(server.url, "m").cache_identity()
        stored = {f"prompt {i}" for i in range(120)
                  if cache.get(request_key("openai-http", "m", Request(prompt=f"prompt {i}", max_tokens=1,
                                                                       top_logprobs=3, stop=()),
                                           identity=identity)) is not None}
        cache.close()
        assert len(answered_before) >= 40 and stored <= answered_before
        rerun = subprocess.run([sys.executable, str(script), server.url, str(db)], env=env, capture_output=True,
                               text=True, timeout=300)
    finally:
        server.close()
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ok, hits, misses = map(int, rerun.stdout.split())
    assert ok == 120 and hits == len(stored) and misses == 120 - len(stored)
    repeated = {p for p, n in Counter(server.answered).items() if n > 1}
    # only calls in flight at the kill (answered by the server, never received and stored) are asked again
    assert repeated == answered_before - stored and len(repeated) <= 4
    assert set(server.answered) == {f"prompt {i}" for i in range(120)}


def test_the_response_cache_never_replays_answers_of_another_api_server_or_served_model(tmp_path):
    """Audit defect: the key held neither the API kind nor the server, so switching `--llm-api`, pointing at
    another server or loading another model into it (without `--llm-model`) replayed the old answers."""
    first, second = FaultyServer(lambda *a: None), FaultyServer(lambda *a: None)
    db = tmp_path / "llm_cache.sqlite"
    requests = [Request(prompt=f"prompt {i}", max_tokens=1, top_logprobs=3, stop=()) for i in range(6)]

    def run(url: str, api: str = "completions") -> CachedClient:
        client = CachedClient(HTTPClient(url, "default", api=api), db)
        if api == "completions":
            assert all(r.ok for r in client.complete(requests))
        return client

    try:
        assert run(first.url).misses == 6
        assert run(first.url).hits == 6  # the same server and model: every answer from the cache
        same = run(first.url)
        assert len({same.key(requests[0]), run(first.url, api="chat").key(requests[0])}) == 2
        assert run(second.url).hits == 0  # another server
        first.models = ["model-b"]  # another model loaded into the same server
        assert run(first.url).hits == 0
        first.models = []  # a server that does not list its models is keyed by its URL
        assert run(first.url).misses == 6 and run(first.url).hits == 6
    finally:
        first.close()
        second.close()
