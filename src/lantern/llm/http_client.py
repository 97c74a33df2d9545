"""OpenAI-compatible HTTP client (vLLM, SGLang, llama.cpp's server, Ollama, OpenRouter).

`base_url` may list several servers separated by commas: requests go to them in turn (load balancing), and a
retried request goes to the next one, so a server that is down only slows the run. The API key is read from
an environment variable and never written anywhere. Retries with exponential
backoff and jitter on 429, 5xx, timeouts and dropped connections, honouring Retry-After; a request that
still fails becomes a Response with `error` set and the run goes on.

A server that has answered and then stops accepting connections (restarted, crashed, redeployed) is an outage,
not a failed call: every request waits for it, polling, for up to `outage_wait` seconds in all without using up
its retries, and the run continues when it is back; past that the run stops with a clear error (the answers
received so far are in the response cache, so the rerun resumes). A server that never answered is a wrong URL
or a server not up yet: that fails after the normal retries, at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import ssl
import time
from typing import AsyncIterator

import httpx

from lantern.errors import LanternError
from lantern.llm.base import Capabilities, LLMClient, Request, Response, normalise_logprobs
from lantern.progress import console

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
CONNECTIONS_PER_POOL = 8


class HTTPClient(LLMClient):
    backend = "openai-http"

    def __init__(self, base_url: str, model_id: str, api: str = "completions", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0,
                 prompt_logprobs: bool = False, outage_wait: float = 300.0):
        if api not in ("completions", "chat"):
            raise LanternError(f"--llm-api must be completions or chat, not {api!r}")
        self.base_urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        if not self.base_urls:
            raise LanternError(f"no server URL in --llm-url {base_url!r}")
        self.base_url = ", ".join(self.base_urls)
        self.model_id = model_id
        self.api = api
        self.chat = api == "chat"
        self.concurrency = concurrency
        self.max_concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        # prompt log-probs need `echo`, which only the completions API of some servers (vLLM, llama.cpp) has
        self.capabilities = Capabilities(logprobs=True, prompt_logprobs=prompt_logprobs and api == "completions")
        self._headers = {}
        key = os.environ.get(api_key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._pools: list[httpx.AsyncClient] = []
        self.outage_wait = outage_wait
        self._answered = False
        self._down_since: float | None = None
        self.outages: list[float] = []
        """Seconds each outage lasted (the server was unreachable, then answered again)."""

    def _outage_left(self) -> float:
        """Seconds this outage may still be waited out (0: not an outage, or waited long enough)."""
        if not self._answered:
            return 0.0
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            console.print(f"[yellow]note:[/yellow] LLM server at {self.base_url} stopped accepting connections; "
                          f"waiting up to {self.outage_wait:.0f}s for it to come back (--llm-wait)")
        left = self.outage_wait - (now - self._down_since)
        if left <= 0:
            raise LanternError(
                f"LLM server at {self.base_url} went away and did not come back within {self.outage_wait:.0f}s "
                f"(--llm-wait); every answer received so far is kept in the response cache: rerun the same "
                f"command once the server is up to resume")
        return left

    def _server_up(self) -> None:
        self._answered = True
        if self._down_since is not None:
            self.outages.append(time.monotonic() - self._down_since)
            console.print(f"LLM server at {self.base_url} is back after {self.outages[-1]:.1f}s; continuing")
            self._down_since = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        # Several small connection pools instead of one large one: httpcore's pool does work proportional to
        # (connections x waiting requests) on every event, which took most of the client's CPU at 64 in flight.
        n_pools = max(1, -(-self.concurrency // CONNECTIONS_PER_POOL))
        size = -(-self.concurrency // n_pools)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        https = any(u.startswith("https") for u in self.base_urls)
        tls = ssl.create_default_context() if https else False  # built once, shared
        async with contextlib.AsyncExitStack() as stack:
            self._pools = [await stack.enter_async_context(
                httpx.AsyncClient(timeout=self.timeout, headers=self._headers, limits=limits, verify=tls))
                for _ in range(n_pools)]
            self._next_pool = itertools.count()
            self._next_server = itertools.count()
            try:
                yield
            finally:
                self._pools = []

    def cache_identity(self) -> dict:
        """The API kind and the servers, plus, when no model was named (`default`: the server decides), the model
        ids the servers report at `/models`: switching `--llm-api`, pointing at another server or loading another
        model into the same one never replays old answers. A server that answers `/models` with an error does not
        list its models and is keyed by its URL only; one that cannot be reached is waited for (up to
        `outage_wait`), since a key made without its answer would differ from every later one."""
        identity: dict = {"api": self.api, "servers": sorted(self.base_urls)}
        if self.model_id == "default":
            served = [model for url in self.base_urls for model in self._served_models(url)]
            if served:
                identity["served"] = sorted(set(served))
        return identity

    def _served_models(self, url: str) -> list[str]:
        deadline = time.monotonic() + self.outage_wait
        waiting = False
        while True:
            try:
                reply = httpx.get(f"{url}/models", headers=self._headers, timeout=min(self.timeout, 10.0))
            except httpx.TransportError as err:
                if not waiting:
                    waiting = True
                    console.print(f"[yellow]note:[/yellow] LLM server at {url} does not answer yet; waiting up to "
                                  f"{self.outage_wait:.0f}s (--llm-wait) to learn which model it serves (give "
                                  f"--llm-model to skip this)")
                if time.monotonic() >= deadline:
                    raise LanternError(
                        f"LLM server at {url} does not answer ({type(err).__name__}); start it, or name the model "
                        f"with --llm-model so its answers can be cached without asking the server") from err
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
                continue
            if reply.status_code != 200:
                return []
            try:
                return [str(m["id"]) for m in reply.json().get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                return []

    def _body(self, r: Request) -> tuple[str, dict]:
        common = {"model": self.model_id, "max_tokens": r.max_tokens, "temperature": r.temperature}
        if r.stop:
            common["stop"] = list(r.stop)
        if r.seed is not None:
            common["seed"] = r.seed
        if r.prompt_logprobs and not self.capabilities.prompt_logprobs:
            raise LanternError(f"prompt log-probs were asked of {self.base_url} ({self.api} API) without "
                               f"--llm-prompt-logprobs: only completions servers with `echo` (vLLM, llama.cpp) have them")
        if self.api == "chat":
            turns = r.messages or (("user", r.prompt),)
            body = {**common, "messages": [{"role": role, "content": content} for role, content in turns]}
            if r.top_logprobs:
                body.update(logprobs=True, top_logprobs=r.top_logprobs)
            return "/chat/completions", body
        body = {**common, "prompt": r.prompt}
        if r.top_logprobs or r.prompt_logprobs:
            body["logprobs"] = max(r.top_logprobs, 1)
        if r.prompt_logprobs:
            body["echo"] = True
        return "/completions", body

    def _parse(self, payload: dict, echoed: bool = False) -> Response:
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        first = None
        extra = {}
        logprobs = choice.get("logprobs")
        if self.api == "chat":
            text = (choice.get("message") or {}).get("content") or ""
            content = (logprobs or {}).get("content") or []
            if content:
                first = normalise_logprobs({e["token"]: e["logprob"] for e in content[0].get("top_logprobs", [])})
        else:
            text = choice.get("text") or ""
            tops = (logprobs or {}).get("top_logprobs") or []
            n_prompt = 0
            if echoed:  # the echoed prompt comes first, in the text and in every log-prob list
                tokens = logprobs["tokens"]
                # the generated tokens come last; servers differ on counting an unechoed BOS in usage
                n_prompt = len(tokens) - int(usage.get("completion_tokens", 0))
                values = logprobs["token_logprobs"]
                extra["prompt"] = [[tokens[i], values[i], normalise_logprobs(dict(tops[i] or {}))]
                                   for i in range(n_prompt)]
                text = text[len("".join(tokens[:n_prompt])):]
            if len(tops) > n_prompt:
                first = normalise_logprobs(dict(tops[n_prompt] or {}))
        return Response(text=text, first_token_logprobs=first, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                        completion_tokens=int(usage.get("completion_tokens", 0)), extra=extra)

    async def _one(self, request: Request) -> Response:
        path, body = self._body(request)
        http = self._pools[next(self._next_pool) % len(self._pools)]
        reasons: list[str] = []
        attempt = 0  # attempts that use up a retry (waiting out an outage does not)
        while True:
            server = self.base_urls[next(self._next_server) % len(self.base_urls)]
            url = server + path
            start = time.perf_counter()
            wait = self.backoff * (2 ** attempt) * (0.5 + random.random())
            try:
                reply = await http.post(url, json=body)
            except httpx.ConnectError as err:
                reason = f"cannot connect to {server}: {err}"
                left = self._outage_left()
                if left > 0:  # an outage: poll without using up a retry, and name it once, not once per poll
                    if not reasons or reasons[-1] != reason:
                        reasons.append(reason)
                    await asyncio.sleep(min(max(self.backoff, 0.2), 2.0, left))
                    continue
                reasons.append(reason)
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
                reasons.append(f"{type(err).__name__}: {err}")
            else:
                self._server_up()
                if reply.status_code == 200:
                    try:
                        response = self._parse(reply.json(), echoed=request.prompt_logprobs)
                    except (ValueError, KeyError, IndexError, TypeError) as err:
                        reasons.append(f"malformed answer from server: {type(err).__name__}: {err}")
                    else:
                        response.seconds = time.perf_counter() - start
                        response.attempts, response.retry_reasons = len(reasons) + 1, reasons
                        return response
                elif reply.status_code in RETRY_STATUS:
                    reasons.append(f"HTTP {reply.status_code}")
                    retry_after = reply.headers.get("retry-after")
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        wait = max(wait, float(retry_after))
                else:
                    return Response(text="", error=f"HTTP {reply.status_code}: {reply.text[:200]}",
                                    attempts=len(reasons) + 1, retry_reasons=reasons)
            if attempt >= self.max_retries:
                return Response(text="", error=reasons[-1], attempts=len(reasons), retry_reasons=reasons[:-1])
            attempt += 1
            await asyncio.sleep(wait)

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    def check_answers(self, responses: list[Response]) -> None:
        """Every answer failing with a refused connection means a wrong URL or a server that is not up: stop
        with one clear message instead of recording thousands of failures."""
        answered = [r for r in responses if r is not None]
        if answered and all(r.error and r.error.startswith("cannot connect") for r in answered):
            reason = answered[0].error.split(": ", 1)[-1]
            raise LanternError(f"LLM server at {self.base_url} refuses connections ({reason})")
