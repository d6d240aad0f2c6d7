"""Graph expansion (pure): neighbours of the strongest fused hits become a ranking of their own.

Seeds are the best ``expansion_seeds`` of the dense + keyword (+ time) fusion; a neighbour scores its
seed's fused score times the weight of the relation that links them (``SearchSettings.relation_weights``)
times the edge's own weight. Search fuses the resulting ranking with the others (``processors.retrieval``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from processors.fusion import reciprocal_rank_fusion
from schemas.memory import RelationRecord

if TYPE_CHECKING:
    from processors.retrieval import SearchSettings

__all__ = ["Expansion", "expansion_seeds", "graph_expansion", "rank_weights"]

logger = logging.getLogger(__name__)


def rank_weights(settings: SearchSettings) -> dict[str, float]:
    """RRF weight of each ranking search fuses (dense, keyword, graph, time)."""
    return {
        "dense": settings.weight_dense,
        "keyword": settings.weight_keyword,
        "graph": settings.weight_graph,
        "time": settings.weight_time,
    }


def expansion_seeds(rankings: Mapping[str, Sequence[str]], settings: SearchSettings) -> list[str]:
    """Ids whose graph neighbours are read: the best ``expansion_seeds`` of the dense + keyword fusion."""
    if settings.expansion_seeds == 0 or settings.weight_graph == 0.0:
        return []
    fused = reciprocal_rank_fusion(rankings, weights=rank_weights(settings), k=settings.rrf_k)
    ordered = sorted(fused, key=lambda i: (-fused[i], i))
    return ordered[: settings.expansion_seeds]


def _entity_rarity(relations: Sequence[RelationRecord]) -> dict[str, float]:
    """Edge id -> 1 / (1 + ln n) for entity links; n: memories the rarest of its shared names links."""
    touched: dict[str, set[str]] = {}
    for edge in relations:
        for name in edge.metadata.get("entities") or () if edge.relation == "RELATES" else ():
            touched.setdefault(str(name), set()).update((edge.source_id, edge.target_id))
    out: dict[str, float] = {}
    for edge in relations:
        names = [str(n) for n in edge.metadata.get("entities") or ()] if edge.relation == "RELATES" else []
        if names:
            n = min(len(touched[name]) for name in names)
            out[edge.id] = 1.0 / (1.0 + math.log(max(n, 1)))
    return out


@dataclass(frozen=True, slots=True)
class Expansion:
    """Graph neighbours of the seeds: a ranking, and for each neighbour its best (seed, factor) link."""

    ranking: tuple[str, ...] = ()
    links: Mapping[str, tuple[str, float]] = field(default_factory=dict)


def graph_expansion(
    rankings: Mapping[str, Sequence[str]], relations: Sequence[RelationRecord], settings: SearchSettings
) -> Expansion:
    """Neighbours of the seeds, best first: score = seed's fused score x relation weight x edge weight.

    Only relations with a positive weight in ``relation_weights`` are followed, in either direction.
    Entity links (RELATES) are followed only from the best ``entity_seeds`` seeds, and each counts
    1 / (1 + ln n) of its weight, n being how many of the read memories its rarest shared name links
    (a name that links everything says little).
    """
    seeds = expansion_seeds(rankings, settings)
    if not seeds:
        return Expansion()
    fused = reciprocal_rank_fusion(rankings, weights=rank_weights(settings), k=settings.rrf_k)
    seed_score = {s: fused[s] for s in seeds}
    entity_seeds = set(seeds[: settings.entity_seeds])
    rarity = _entity_rarity(relations)
    best: dict[str, float] = {}
    links: dict[str, tuple[str, float]] = {}
    for edge in relations:
        factor = settings.relation_weights.get(edge.relation, 0.0) * max(edge.weight, 0.0)
        if edge.relation == "RELATES":
            factor *= rarity.get(edge.id, 1.0)
        if factor <= 0.0:
            continue
        for here, there in ((edge.source_id, edge.target_id), (edge.target_id, edge.source_id)):
            if edge.relation == "RELATES" and here not in entity_seeds:
                continue
            if here in seed_score and there != here:
                score = seed_score[here] * factor
                if score > best.get(there, 0.0) or (score == best.get(there) and here < links[there][0]):
                    best[there] = score
                    links[there] = (here, min(factor, 1.0))
    # neighbours linked alike (a seed's windows before and after it) go by their own dense + keyword score:
    # ids are random per add, so ordering them by id made fresh ingests of the same text rank differently
    return Expansion(tuple(sorted(best, key=lambda i: (-best[i], -fused.get(i, 0.0), i))), links)
