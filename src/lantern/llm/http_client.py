"""OpenAI-compatible HTTP client (vLLM, SGLang, llama.cpp's server, Ollama, OpenRouter).

The API key is read from an environment variable and never written anywhere. Retries with exponential
backoff and jitter on 429, 5xx, timeouts and dropped connections, honouring Retry-After; a request that
still fails becomes a Response with `error` set and the run goes on.
"""
from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from lantern.errors import LanternError
from lantern.llm.base import LLMClient, Request, Response, normalise_logprobs

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class HTTPClient(LLMClient):
    backend = "openai-http"

    def __init__(self, base_url: str, model_id: str, api: str = "completions", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0):
        if api not in ("completions", "chat"):
            raise LanternError(f"--llm-api must be completions or chat, not {api!r}")
        self.base_url = base_url.rstrip("/")
        self.model_id = model_id
        self.api = api
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        headers = {}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = httpx.Client(timeout=timeout, headers=headers)

    def _body(self, r: Request) -> tuple[str, dict]:
        common = {"model": self.model_id, "max_tokens": r.max_tokens, "temperature": r.temperature}
        if r.stop:
            common["stop"] = list(r.stop)
        if self.api == "chat":
            body = {**common, "messages": [{"role": "user", "content": r.prompt}]}
            if r.top_logprobs:
                body.update(logprobs=True, top_logprobs=r.top_logprobs)
            return "/chat/completions", body
        body = {**common, "prompt": r.prompt}
        if r.top_logprobs:
            body["logprobs"] = r.top_logprobs
        return "/completions", body

    def _parse(self, payload: dict) -> Response:
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        first = None
        logprobs = choice.get("logprobs")
        if self.api == "chat":
            text = (choice.get("message") or {}).get("content") or ""
            content = (logprobs or {}).get("content") or []
            if content:
                first = normalise_logprobs({e["token"]: e["logprob"] for e in content[0].get("top_logprobs", [])})
        else:
            text = choice.get("text") or ""
            tops = (logprobs or {}).get("top_logprobs") or []
            if tops:
                first = normalise_logprobs(dict(tops[0]))
        return Response(text=text, first_token_logprobs=first, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                        completion_tokens=int(usage.get("completion_tokens", 0)))

    def _one(self, request: Request) -> Response:
        path, body = self._body(request)
        url = self.base_url + path
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            start = time.perf_counter()
            wait = self.backoff * (2 ** attempt) * (0.5 + random.random())
            try:
                reply = self.http.post(url, json=body)
            except httpx.ConnectError as err:
                last_error = f"cannot connect to {self.base_url}: {err}"
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as err:
                last_error = f"{type(err).__name__}: {err}"
            else:
                if reply.status_code == 200:
                    try:
                        response = self._parse(reply.json())
                    except (ValueError, KeyError, IndexError, TypeError) as err:
                        last_error = f"malformed answer from server: {type(err).__name__}: {err}"
                    else:
                        response.seconds = time.perf_counter() - start
                        return response
                elif reply.status_code in RETRY_STATUS:
                    last_error = f"HTTP {reply.status_code}"
                    retry_after = reply.headers.get("retry-after")
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        wait = max(wait, float(retry_after))
                else:
                    return Response(text="", error=f"HTTP {reply.status_code}: {reply.text[:200]}")
            if attempt < self.max_retries:
                time.sleep(wait)
        return Response(text="", error=last_error)

    def complete(self, requests: list[Request]) -> list[Response]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            responses = list(pool.map(self._one, requests))
        if responses and all(r.error and r.error.startswith("cannot connect") for r in responses):
            raise LanternError(f"LLM server at {self.base_url} refuses connections ({responses[0].error.split(': ', 1)[-1]})")
        return responses

    def close(self) -> None:
        self.http.close()
