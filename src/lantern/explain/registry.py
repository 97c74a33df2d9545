"""Explainers by name, as `--explainer` and `ExplainerConfig.kind` spell them."""
from __future__ import annotations

from lantern.errors import LanternError
from lantern.explain.base import Explainer
from lantern.explain.contrastive import ContrastiveExplainer
from lantern.explain.cot import ChainOfThoughtExplainer
from lantern.explain.default import ActivationsExplainer, DefaultExplainer
from lantern.explain.ensemble import EnsembleExplainer
from lantern.explain.output import OutputExplainer
from lantern.explain.settings import ExplainerConfig

EXPLAINERS: dict[str, type[Explainer]] = {cls.name: cls for cls in (
    DefaultExplainer, ActivationsExplainer, ChainOfThoughtExplainer, ContrastiveExplainer, OutputExplainer,
    EnsembleExplainer)}


def get_explainer(name: str) -> Explainer:
    try:
        return EXPLAINERS[name]()
    except KeyError:
        raise LanternError(f"unknown explainer {name!r}; available: {', '.join(EXPLAINERS)}") from None


def explainer_for(cfg: ExplainerConfig) -> Explainer:
    """The configured explainer; `default` with `show_activations` set is the `activations` explainer."""
    if cfg.kind == "default" and cfg.show_activations:
        return ActivationsExplainer()
    return get_explainer(cfg.kind)
