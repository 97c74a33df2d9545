"""The executor interface: run a stage's partitions somewhere, in order of submission, and return their results.

A stage splits its work into partitions (corpus batches for the cache, latent ranges for the others), and each
partition is one call of a module-level function that writes its own files (see partitions.py). The executor
only decides where those calls run; the code they run is the same for every executor.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lantern.errors import LanternError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """How partitions are scheduled; never changes what a run computes, so it is not saved in config.json."""

    kind: str = "local"
    """`local` (this process, one partition per stage) or `ray`."""
    address: str | None = None
    """Address of a running Ray cluster (`ray start --head` prints it); None starts a local Ray."""
    partitions: int = 0
    """Partitions per stage; 0: one for the local executor, two per CPU of the Ray cluster."""
    max_retries: int = 3
    """Times Ray re-runs a partition whose worker died (the partition's half-written files are discarded)."""


class Executor(ABC):
    """Runs partitions; `map` returns their results in the order of `calls`."""

    name: str

    @abstractmethod
    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], label: str) -> list[Any]:
        """`fn(*args)` for every `args` in `calls`."""

    @abstractmethod
    def default_partitions(self) -> int:
        """How many partitions a stage is split into when the config does not say."""

    def partitions(self, n_items: int, wanted: int = 0) -> int:
        """Partitions for `n_items` units of work: never more partitions than units, at least one."""
        return max(1, min(n_items, wanted or self.default_partitions()))

    def share(self, value: Any) -> Any:
        """`value` as an argument many partitions receive (Ray stores it once in its object store)."""
        return value

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""


def make_executor(cfg: ExecutorConfig | None = None) -> Executor:
    cfg = cfg or ExecutorConfig()
    if cfg.kind == "local":
        from lantern.executors.local import LocalExecutor

        return LocalExecutor(cfg)
    if cfg.kind == "ray":
        from lantern.executors.ray import RayExecutor

        return RayExecutor(cfg)
    raise LanternError(f"unknown executor {cfg.kind!r}: use one of {', '.join(EXECUTORS)}")


def split_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) cut into `parts` contiguous ranges of near-equal length (none empty unless n == 0)."""
    parts = max(1, min(parts, n)) if n else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]
