"""The wait for a vanished LLM server is bounded: past `outage_wait` the run stops with a clear error, and every
answer received before the server went away is in the response cache for the rerun. (Waiting out a server
process that is killed and comes back is tested end to end in test_fault_run.py.)"""
from __future__ import annotations

import threading
import time

import pytest

from faultkit import scripted_answer
from lantern.errors import LanternError
from lantern.llm.base import Request
from lantern.llm.http_client import HTTPClient
from lantern.llm.response_cache import CachedClient
from test_llm_faults import FaultyServer

REQUESTS = [Request(prompt=f"prompt {i}", max_tokens=1, top_logprobs=3, stop=()) for i in range(30)]


def test_a_server_that_never_comes_back_stops_the_run_after_the_wait(tmp_path):
    box: dict = {}

    def plan(prompt: str, attempt: int, call: int):
        if call == 8:  # the server dies: its listening socket closes, calls in flight lose their connection
            threading.Thread(target=box["server"].close).start()
        return "drop" if call >= 8 else None

    server = box["server"] = FaultyServer(plan, answer=scripted_answer, delay=0.01)
    http = HTTPClient(server.url, "m", api_key_env="LANTERN_NO_KEY", concurrency=2, backoff=0.01, outage_wait=1.0)
    client = CachedClient(http, tmp_path / "llm_cache.sqlite", concurrency=2)
    started = time.monotonic()
    with pytest.raises(LanternError, match=r"went away and did not come back within 1s \(--llm-wait\).*kept in "
                                           r"the response cache"):
        client.complete(REQUESTS)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 15, waited
    assert len(server.answered) >= 5
    assert client.cache.count() == len(server.answered)  # every answer received before the outage is kept
    client.close()
