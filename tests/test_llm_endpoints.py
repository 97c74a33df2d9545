"""Several OpenAI-compatible servers behind one `--llm-url a,b,c`: calls go to each in turn, and a server
that is down only costs retries on the next one."""
from __future__ import annotations

import socket

import pytest

from lantern.errors import LanternError
from lantern.llm.base import Request
from lantern.llm.http_client import HTTPClient
from test_llm import FakeOpenAI


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def servers():
    live = [FakeOpenAI(), FakeOpenAI()]
    yield live
    for s in live:
        s.close()


def test_calls_are_spread_over_every_server(servers):
    client = HTTPClient(",".join(s.url for s in servers), "m", concurrency=4, backoff=0.001,
                        api_key_env="LANTERN_TEST_NO_KEY")
    requests = [Request(prompt=f"p{i}", max_tokens=1, top_logprobs=2) for i in range(40)]
    answers = client.complete(requests)
    assert [a.text for a in answers] == [f"answer to p{i}" for i in range(40)]
    counts = [len(s.requests) for s in servers]
    assert sum(counts) == 40 and counts == [20, 20]  # in turn: one each


def test_a_dead_server_among_them_only_costs_retries(servers):
    urls = [servers[0].url, _dead_url(), servers[1].url]
    client = HTTPClient(",".join(urls), "m", concurrency=4, backoff=0.001, api_key_env="LANTERN_TEST_NO_KEY")
    answers = client.complete([Request(prompt=f"p{i}", max_tokens=1) for i in range(30)])
    assert all(a.ok for a in answers)
    assert all(s.requests for s in servers) and sum(len(s.requests) for s in servers) == 30
    retried = [a for a in answers if a.attempts > 1]
    assert retried and all("cannot connect to " + urls[1] in a.retry_reasons[0] for a in retried)


def test_every_server_dead_is_one_clear_error():
    client = HTTPClient(f"{_dead_url()}, {_dead_url()}", "m", max_retries=1, backoff=0.001,
                        api_key_env="LANTERN_TEST_NO_KEY")
    with pytest.raises(LanternError, match="refuses connections"):
        client.complete([Request(prompt="p", max_tokens=1)])


def test_an_empty_url_list_is_refused():
    with pytest.raises(LanternError, match="no server URL"):
        HTTPClient(" , ", "m")
