"""Graph stores at scale: one Cypher core (``cypher``) and two drivers, FalkorDB and Neo4j.

The driver modules import their client libraries (``falkordb``, ``neo4j``) only when a store starts,
so importing this package needs neither.
"""

from __future__ import annotations

import logging

from memory_store.graph.falkordb import FalkorDBGraphStore
from memory_store.graph.neo4j import Neo4jGraphStore

__all__ = ["FalkorDBGraphStore", "Neo4jGraphStore"]

logger = logging.getLogger(__name__)
