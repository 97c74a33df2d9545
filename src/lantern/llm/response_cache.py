"""A content-addressed, persistent response cache: a rerun never pays twice for the same answer.

Keyed by backend + model + the full request (prompt and sampling parameters). SQLite in WAL mode is safe
for several processes; an answer is committed as soon as its batch finishes, so a killed run keeps it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path

from lantern.llm.base import LLMClient, Request, Response


def request_key(backend: str, model_id: str, request: Request) -> str:
    payload = json.dumps({"backend": backend, "model": model_id, "request": dataclasses.asdict(request)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class CachedClient(LLMClient):
    """Wraps a client; only successful answers are stored, so failures are retried next run."""

    def __init__(self, inner: LLMClient, path: str | Path):
        self.inner = inner
        self.backend, self.model_id = inner.backend, inner.model_id
        self.supports_logprobs = inner.supports_logprobs
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")
        self.db.commit()
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: str) -> Response | None:
        row = self.db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        response = Response(**json.loads(row[0]))
        response.cached = True
        return response

    def complete(self, requests: list[Request]) -> list[Response]:
        keys = [request_key(self.backend, self.model_id, r) for r in requests]
        answers: list[Response | None] = [self._lookup(k) for k in keys]
        missing = [i for i, a in enumerate(answers) if a is None]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = self.inner.complete([requests[i] for i in missing])
            with self.db:
                for i, response in zip(missing, fresh):
                    answers[i] = response
                    if response.ok:
                        stored = dataclasses.asdict(response)
                        stored["cached"] = False
                        self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (keys[i], json.dumps(stored)))
        return [a for a in answers if a is not None]

    def close(self) -> None:
        self.db.close()
        self.inner.close()
