"""The default executor: every partition runs in this process, one after the other."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from lantern.executors.base import Executor, ExecutorConfig


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, cfg: ExecutorConfig = ExecutorConfig()):
        self.cfg = cfg

    def default_partitions(self) -> int:
        # one partition: the whole stage's LLM prompts share one queue, which keeps a server saturated
        return self.cfg.partitions or 1

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], label: str) -> list[Any]:
        return [fn(*args) for args in calls]
