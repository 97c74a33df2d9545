"""A content-addressed, persistent response cache: a rerun never pays twice for the same answer.

Keyed by backend + model + the full request (prompt and sampling parameters). SQLite in WAL mode with a busy
timeout is safe for several threads and processes; each answer is committed the moment the queue receives
it, so a run killed with SIGKILL keeps every answer it had been given.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import AsyncContextManager

from lantern.llm.base import LLMClient, OnResponse, Request, Response


def request_key(backend: str, model_id: str, request: Request, chat: bool = False, identity: dict | None = None) -> str:
    """Everything that can change an answer: backend, model id, the client's `cache_identity` (API kind, servers,
    the model a server reports) and the full request. The request's chat turns count only for a backend that
    sends them: a base-model backend's keys do not change when a chat prompt's wording does. An empty identity
    leaves the key as it was before identities existed (in-process model ids already name the weights)."""
    fields = dataclasses.asdict(request)
    if not chat or not request.messages:
        fields.pop("messages")
    key = {"backend": backend, "model": model_id, "request": fields}
    if identity:
        key["identity"] = identity
    payload = json.dumps(key, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """The SQLite table of successful answers."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self._setup_retrying_when_locked([
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)",
        ])

    def _setup_retrying_when_locked(self, statements: list[str], seconds: float = 60.0) -> None:
        """Run the setup statements, retrying while another process holds the file. Switching a new file to WAL
        takes an exclusive lock, and SQLite answers "database is locked" at once (no busy wait, to avoid a
        deadlock) when several processes open the same new file together, as Ray workers do."""
        deadline, pause = time.monotonic() + seconds, 0.01
        for statement in statements:
            while True:
                try:
                    self.db.execute(statement)
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        self.db.close()
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)

    def get(self, key: str) -> Response | None:
        with self.lock:
            row = self.db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        response = Response(**json.loads(row[0]))
        response.cached = True
        return response

    def put(self, key: str, response: Response) -> None:
        stored = dataclasses.asdict(response)
        stored["cached"] = False
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(stored)))

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class CachedClient(LLMClient):
    """Any client behind the response cache, called like any client: only misses reach the backend (through the
    same queue, with this wrapper's `concurrency`), and only successful answers are stored, so failures are
    retried by the next run."""

    def __init__(self, inner: LLMClient, path: str | Path, concurrency: int = 8):
        self.inner = inner
        self.backend, self.model_id = inner.backend, inner.model_id
        self.capabilities = inner.capabilities
        self.max_batch, self.max_concurrency = inner.max_batch, inner.max_concurrency
        self.chat = inner.chat
        self.identity = inner.cache_identity()
        self.concurrency = concurrency
        self.cache = ResponseCache(path)
        self.hits = 0
        self.misses = 0

    def key(self, request: Request) -> str:
        return request_key(self.backend, self.model_id, request, self.chat, self.identity)

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        return await self.inner.acomplete(batch)

    def session(self) -> AsyncContextManager[None]:
        return self.inner.session()

    def cache_identity(self) -> dict:
        return self.identity

    def check_answers(self, responses: list[Response]) -> None:
        self.inner.check_answers(responses)

    def complete(self, requests: list[Request], on_response: OnResponse | None = None) -> list[Response]:
        """Cached answers first (handed to `on_response` at once), then the misses through the queue, each
        committed the moment it arrives; `check_answers` sees the fresh answers only."""
        keys = [self.key(r) for r in requests]
        answers: list[Response | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, a in enumerate(answers) if a is None]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        if on_response is not None:
            for i, answer in enumerate(answers):
                if answer is not None:
                    on_response(i, answer)
        if not missing:
            return answers  # type: ignore[return-value]

        def store(j: int, response: Response) -> None:
            i = missing[j]
            if response.ok:
                self.cache.put(keys[i], response)
            if on_response is not None:
                on_response(i, response)

        fresh = super().complete([requests[i] for i in missing], on_response=store)
        for i, response in zip(missing, fresh):
            answers[i] = response
        return answers  # type: ignore[return-value]

    def close(self) -> None:
        self.cache.close()
        self.inner.close()
