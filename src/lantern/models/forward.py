"""Forward passes that capture activations at hookpoints and stop after the deepest one."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from lantern.errors import LanternError
from lantern.models.hookpoints import Hookpoint, module_of


class _StopForward(Exception):
    """Raised from the last hook so later layers (and the vocabulary head) never run."""


def _first_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return _first_tensor(value[0])
    raise TypeError(f"hook saw {type(value).__name__}, expected a tensor")


@contextmanager
def _capture(model: torch.nn.Module, hookpoints: list[Hookpoint], store: dict[str, torch.Tensor]):
    handles = []
    wanted = {hp.name for hp in hookpoints}

    def make_hook(hp: Hookpoint):
        def hook(module, args, output):
            store[hp.name] = _first_tensor(args if hp.read == "input" else output)
            if wanted.issubset(store):
                raise _StopForward

        return hook

    try:
        for hp in hookpoints:
            handles.append(module_of(model, hp).register_forward_hook(make_hook(hp)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def capture_activations(model: torch.nn.Module, input_ids: torch.Tensor,
                        hookpoints: list[Hookpoint]) -> dict[str, torch.Tensor]:
    """Run `model` on `input_ids` until every hookpoint has fired; return {name: [batch, seq, d]}."""
    store: dict[str, torch.Tensor] = {}
    with _capture(model, hookpoints, store):
        try:
            model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        except _StopForward:
            pass
    missing = {hp.name for hp in hookpoints} - set(store)
    if missing:
        raise LanternError(f"hookpoints never fired during the forward pass (not a module that runs on its own?): "
                           f"{sorted(missing)}")
    return store
