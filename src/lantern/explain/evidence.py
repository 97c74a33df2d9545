"""A latent's records turned into the evidence explainers see."""
from __future__ import annotations

from lantern.errors import LanternError
from lantern.explain.base import LatentEvidence, Window


def from_records(coder: str, latent: int, rows: list[dict]) -> LatentEvidence:
    """The explain split of one latent's record rows: activating windows, and negatives where records made
    them. Windows keep the records' order."""
    explain = [r for r in rows if r["split"] == "explain"]
    windows = [Window.of(r) for r in explain if r["kind"] == "activating"]
    if not windows:
        raise LanternError(f"{coder} latent {latent} has no activating explain windows in its records; "
                           f"rebuild them with `lantern records`")
    return LatentEvidence(coder=coder, latent=latent, windows=windows,
                          negatives=[Window.of(r) for r in explain if r["kind"] == "negative"],
                          latent_max=max(float(r["max_activation"]) for r in explain))
