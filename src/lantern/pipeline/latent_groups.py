"""How the score stage splits its latents into partitions, and what every partition must see of the others."""
from __future__ import annotations

from lantern.executors.base import Executor, split_ranges


def latent_groups(explanations: list[dict], executor: Executor) -> list[list[dict]]:
    """The explanations cut into the executor's partitions, each holding whole latents (all candidates of one
    latent stay together, for best-of-k to compare), latents in first-seen order."""
    latents = list(dict.fromkeys((r["coder"], r["latent"]) for r in explanations))
    groups = []
    for a, b in split_ranges(len(latents), executor.partitions(len(latents))):
        mine = set(latents[a:b])
        groups.append([r for r in explanations if (r["coder"], r["latent"]) in mine])
    return groups


def first_explanations(explanations: list[dict]) -> dict[tuple[str, int], str]:
    """Each latent's explanation (the chosen one, after best-of-k), over the whole stage and not only a
    partition's latents, so a scorer that borrows another latent's explanation (the intervention's shuffled
    baseline) chooses the same one whatever the partitioning."""
    out: dict[tuple[str, int], str] = {}
    for row in explanations:
        out.setdefault((row["coder"], row["latent"]), row["explanation"])
    return out
