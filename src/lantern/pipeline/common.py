"""Helpers shared by the LLM stages: reading records, chunked LLM calls with progress."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from lantern.llm.base import LLMClient, Request, Response
from lantern.progress import progress_bar


def examples_by_latent(path: Path) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = defaultdict(list)
    if path.exists():
        for row in pq.read_table(path).to_pylist():
            grouped[row["latent"]].append(row)
    return dict(grouped)


def complete_all(client: LLMClient, requests: list[Request], description: str, chunk: int = 32) -> list[Response]:
    """Send requests in chunks so progress shows and each finished chunk lands in the response cache."""
    responses: list[Response] = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(requests))
        for lo in range(0, len(requests), chunk):
            responses.extend(client.complete(requests[lo:lo + chunk]))
            bar.advance(task, min(chunk, len(requests) - lo))
    return responses
