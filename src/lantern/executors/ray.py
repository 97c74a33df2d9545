"""Partitions as Ray tasks (`--executor ray`): Ray schedules them and re-runs one whose worker died.

A task that fails with an error of its own (bad input) is not retried: the error reaches the driver as it was
raised. A partition writes into a staging folder renamed into place when complete (partitions.py), so a
worker killed mid-task leaves nothing the merge would read, and its re-run starts clean.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any, Callable, Sequence

from lantern.errors import LanternError
from lantern.executors.base import Executor, ExecutorConfig
from lantern.progress import progress_bar

LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # a local Ray otherwise binds to the machine's external address
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def _ray():
    try:
        import ray
    except ImportError as err:
        raise LanternError("--executor ray needs Ray: pip install 'lantern-interp[ray]' (or pip install ray)") from err
    return ray


def _check_reachable(address: str) -> None:
    """Fail at once on a head node nothing listens at (Ray itself retries for minutes)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except (OSError, ValueError) as err:
        raise LanternError(f"no Ray cluster at {address} ({err}); start one with `ray start --head` (it prints the "
                           f"address) or leave --ray-address out for a local Ray") from err


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, cfg: ExecutorConfig = ExecutorConfig(kind="ray")):
        ray = _ray()
        self.cfg = cfg
        self.started = False
        self.temp_dir: str | None = None
        if not ray.is_initialized():
            if cfg.address:
                _check_reachable(cfg.address)
                try:
                    ray.init(address=cfg.address, log_to_driver=True)
                except (ConnectionError, ValueError, RuntimeError) as err:
                    raise LanternError(f"cannot connect to the Ray cluster at {cfg.address} ({err}); start one with "
                                       f"`ray start --head` or leave --ray-address out for a local Ray") from err
            else:
                for key, value in LOCAL_ENV.items():
                    os.environ.setdefault(key, value)
                # a short folder of its own: Ray's socket paths have a length limit
                self.temp_dir = tempfile.mkdtemp(prefix="lantern-ray-", dir="/tmp")
                ray.init(include_dashboard=False, _temp_dir=self.temp_dir)
            self.started = True

    def default_partitions(self) -> int:
        if self.cfg.partitions:
            return self.cfg.partitions
        return 2 * max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], label: str) -> list[Any]:
        ray = _ray()
        task = ray.remote(fn).options(max_retries=self.cfg.max_retries, retry_exceptions=False, num_cpus=1,
                                      name=f"lantern-{label}")
        refs = [task.remote(*args) for args in calls]
        pending = list(refs)
        with progress_bar() as bar:
            progress = bar.add_task(f"{label} (ray, {len(refs)} partitions)", total=len(refs))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(done)
                except ray.exceptions.RayTaskError as err:
                    for ref in pending:
                        ray.cancel(ref)
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, LanternError):
                        raise LanternError(str(cause)) from err
                    raise
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
                    raise LanternError(f"a {label} partition's worker died {self.cfg.max_retries + 1} times; "
                                       f"rerun the stage (finished work is kept): {err}") from err
                bar.advance(progress)
        return ray.get(refs)

    def share(self, value: Any) -> Any:
        return _ray().put(value)

    def close(self) -> None:
        if self.started:
            _ray().shutdown()
            self.started = False
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
