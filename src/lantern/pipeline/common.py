"""Helpers shared by the LLM stages: reading records, queued LLM calls with progress."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern.llm.base import LLMClient, Request, Response
from lantern.progress import progress_bar


def examples_by_latent(path: Path, latents: list[int] | None = None) -> dict[int, list[dict]]:
    """Records rows grouped by latent (only those of `latents`, where given)."""
    grouped: dict[int, list[dict]] = defaultdict(list)
    if path.exists():
        table = pq.read_table(path)
        if latents is not None:
            table = table.filter(pc.is_in(table.column("latent"), pa.array(latents, pa.int64())))
        for row in table.to_pylist():
            grouped[row["latent"]].append(row)
    return dict(grouped)


def complete_all(client: LLMClient, requests: list[Request], description: str) -> list[Response]:
    """All of a stage's prompts through one queue (and the response cache, when the client is wrapped in one),
    with a progress bar that moves as each answer arrives."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(requests))
        return client.complete(requests, on_response=lambda i, response: bar.advance(task))
