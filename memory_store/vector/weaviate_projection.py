"""WeaviateProjection: connection, checkpoint and the planned, idempotent write path shared by the Weaviate stores.

Weaviate has no multi-object transactions: ``apply`` plans every op first (reads current objects,
checks dimensions) without writing, then removes dropped tenants, upserts the objects in batches
(deterministic UUIDs, so a replay overwrites itself), and writes the checkpoint object last. A crash
in between leaves the checkpoint behind and the redelivered position rewrites the same objects.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from memory_store.base import Projection
from memory_store.vector.weaviate_schema import (
    COLLECTION_NAME,
    UUID_NS,
    VECTOR_NAME,
    ensure_collections,
    import_weaviate,
    indexed_terms,
    map_weaviate_errors,
    object_properties,
    object_uuid,
    tenant_name,
)
from schemas.envelope import Position
from schemas.errors import ConfigError, DimensionMismatch, StoreError
from schemas.ops import AnyOp, DropCube, RetireMemory, ReviseMemory, UpsertMemory, UpsertRelation

__all__ = ["WeaviateProjection", "WritePlan"]

logger = logging.getLogger(__name__)

_BATCH = 200


class WeaviateProjection(Projection):
    """Shared plumbing: connection, collections, tenants, planned upserts and the checkpoint."""

    keeps_vectors = False
    default_collection = "Memos"

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        collection: str | None = None,
        api_key: str | None = None,
        grpc_host: str | None = None,
        grpc_port: int | None = None,
        timeout_s: float = 30.0,
        client: Any = None,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.removeprefix("weaviate+")
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"{type(self).__name__} needs an http(s):// or weaviate+http(s):// URL, got {url!r}"
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.collection = collection or query.get("collection") or self.default_collection
        if not COLLECTION_NAME.match(self.collection):
            raise ConfigError(f"Weaviate collection {self.collection!r} must match {COLLECTION_NAME.pattern}")
        self.checkpoint_collection = f"{self.collection}Checkpoint"
        secure = scheme == "https"
        self._http = (parts.hostname or "127.0.0.1", parts.port or (443 if secure else 8080), secure)
        self._grpc = (
            grpc_host or query.get("grpc_host") or self._http[0],
            int(grpc_port or query.get("grpc_port") or (443 if secure else 50051)),
            query.get("grpc_secure", str(secure)).lower() in ("1", "true", "yes"),
        )
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._client: Any = client
        self._owns_client = client is None
        self._started = False

    def __repr__(self) -> str:
        host, port, _ = self._http
        return f"{type(self).__name__}(host={host!r}, port={port}, collection={self.collection!r})"

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        weaviate = import_weaviate()
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        try:
            if self._client is None:
                (http_host, http_port, http_secure), (grpc_host, grpc_port, grpc_secure) = (
                    self._http,
                    self._grpc,
                )
                self._client = weaviate.use_async_with_custom(
                    http_host=http_host, http_port=http_port, http_secure=http_secure,
                    grpc_host=grpc_host, grpc_port=grpc_port, grpc_secure=grpc_secure,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(init=min(self._timeout_s, 10.0), query=self._timeout_s, insert=self._timeout_s)
                    ),
                )  # fmt: skip
            with map_weaviate_errors("connect"):
                if not self._client.is_connected():
                    await self._client.connect()
                await ensure_collections(
                    self._client,
                    self.collection,
                    self.checkpoint_collection,
                    keeps_vectors=self.keeps_vectors,
                )
        except BaseException:
            await self.aclose()
            raise
        self._started = True
        logger.info("%s started collection=%s", type(self).__name__, self.collection)

    async def aclose(self) -> None:
        self._started = False
        client = self._client
        if client is not None and self._owns_client:
            self._client = None
            try:
                await client.close()
            except (OSError, RuntimeError) as exc:  # closing a dead connection is not an error
                logger.debug("weaviate close failed: %r", exc)

    # --- plumbing -------------------------------------------------------------------------------------

    def _memories(self) -> Any:
        if self._client is None:
            raise StoreError(f"{self!r} is not started")
        return self._client.collections.get(self.collection)

    async def _tenant_exists(self, tenant: str) -> bool:
        with map_weaviate_errors("tenant lookup"):
            return bool(await self._memories().tenants.exists(tenant))

    def _filters(self, include_retired: bool, memory_types: Sequence[str] | None) -> Any:
        from weaviate.classes.query import Filter

        parts = []
        if not include_retired:
            parts.append(Filter.by_property("status").equal("activated"))
        if memory_types is not None:
            parts.append(Filter.by_property("memory_type").contains_any(list(memory_types)))
        return Filter.all_of(parts) if parts else None

    async def _stored_dimension(self, tenant: str) -> int | None:
        from weaviate.classes.query import Filter

        if not self.keeps_vectors or not await self._tenant_exists(tenant):
            return None
        with map_weaviate_errors("dimension"):
            result = (
                await self._memories()
                .with_tenant(tenant)
                .query.fetch_objects(
                    filters=Filter.by_property("dim").greater_than(0), limit=1, return_properties=["dim"]
                )
            )
        return int(result.objects[0].properties["dim"]) if result.objects else None

    # --- projection -----------------------------------------------------------------------------------

    async def apply(self, ops: Sequence[AnyOp], position: Position, *, replay: bool = False) -> bool:
        if not replay:
            current = await self.checkpoint(position.topic, position.partition)
            if current is not None and position.offset <= current:
                return False
        plan = WritePlan(self)
        for op in ops:
            await plan.add(op)
        await plan.execute()
        if not replay:
            await self._write_checkpoint(position)
        logger.debug(
            "%s apply topic=%s partition=%d offset=%d ops=%d replay=%s",
            type(self).__name__, position.topic, position.partition, position.offset, len(ops), replay,
        )  # fmt: skip
        return True

    def _checkpoint_uuid(self, topic: str, partition: int) -> uuid.UUID:
        return uuid.uuid5(UUID_NS, f"checkpoint\x00{self.name}\x00{topic}\x00{partition}")

    async def checkpoint(self, topic: str, partition: int) -> int | None:
        if self._client is None:
            raise StoreError(f"{self!r} is not started")
        collection = self._client.collections.get(self.checkpoint_collection)
        with map_weaviate_errors("checkpoint"):
            found = await collection.query.fetch_object_by_id(self._checkpoint_uuid(topic, partition))
        return None if found is None else int(found.properties["offset"])

    async def _write_checkpoint(self, position: Position) -> None:
        from weaviate.classes.data import DataObject

        collection = self._client.collections.get(self.checkpoint_collection)
        properties = {"projection": self.name, "topic": position.topic, "partition": position.partition,
                      "offset": position.offset}  # fmt: skip
        with map_weaviate_errors(f"checkpoint {position}"):
            result = await collection.data.insert_many(
                [
                    DataObject(
                        properties=properties, uuid=self._checkpoint_uuid(position.topic, position.partition)
                    )
                ]
            )
        if result.has_errors:
            raise StoreError(f"weaviate refused checkpoint {position}: {list(result.errors.values())[:1]}")

    async def drop_collections(self) -> None:
        """Delete this projection's collections (test teardown, decommissioning). Idempotent."""
        if self._client is None:
            raise StoreError(f"{self!r} is not started")
        with map_weaviate_errors("drop collections"):
            for name in (self.collection, self.checkpoint_collection):
                await self._client.collections.delete(name)


class WritePlan:
    """The effect of one position's ops, computed before anything is written."""

    def __init__(self, store: WeaviateProjection) -> None:
        self.store = store
        self.drops: list[str] = []
        self.puts: dict[tuple[str, uuid.UUID], tuple[dict[str, Any], list[float] | None]] = {}
        self.dims: dict[str, int | None] = {}
        self.tenants: dict[str, bool] = {}

    async def _exists(self, tenant: str) -> bool:
        if tenant not in self.tenants:
            self.tenants[tenant] = await self.store._tenant_exists(tenant)
        return self.tenants[tenant]

    async def _dimension(self, tenant: str) -> int | None:
        if tenant not in self.dims:
            self.dims[tenant] = await self.store._stored_dimension(tenant)
        return self.dims[tenant]

    async def _vector(self, tenant: str, embedding: Sequence[float]) -> list[float] | None:
        if not self.store.keeps_vectors or not embedding:
            return None
        known = await self._dimension(tenant)
        if known is not None and known != len(embedding):
            raise DimensionMismatch(f"cube tenant {tenant!r} holds {known}-d vectors, got {len(embedding)}-d")
        self.dims[tenant] = len(embedding)
        return [float(v) for v in embedding]

    async def _current(self, tenant: str, key: uuid.UUID) -> tuple[dict[str, Any], list[float] | None] | None:
        if (tenant, key) in self.puts:
            return self.puts[(tenant, key)]
        if not await self._exists(tenant):
            return None
        with map_weaviate_errors("read"):
            found = (
                await self.store._memories()
                .with_tenant(tenant)
                .query.fetch_object_by_id(key, include_vector=self.store.keeps_vectors)
            )
        if found is None:
            return None
        vector = (found.vector or {}).get(VECTOR_NAME) if self.store.keeps_vectors else None
        return dict(found.properties), (list(vector) if vector else None)

    async def add(self, op: AnyOp) -> None:
        match op:
            case UpsertMemory(memory=record):
                tenant = tenant_name(record.cube_id)
                vector = await self._vector(tenant, record.embedding)
                self.puts[(tenant, object_uuid(record.id))] = (
                    object_properties(record, len(vector) if vector else 0), vector,
                )  # fmt: skip
            case ReviseMemory() | RetireMemory():
                tenant = tenant_name(op.cube_id)
                key = object_uuid(op.memory_id)
                current = await self._current(tenant, key)
                if current is None or current[0].get("cube_id") != op.cube_id:
                    return
                properties, vector = dict(current[0]), current[1]
                properties["updated_at"] = op.updated_at
                if isinstance(op, RetireMemory):
                    properties["status"] = "retired"
                else:
                    properties["memory"] = op.memory
                    properties["terms"] = indexed_terms(str(properties.get("key") or ""), op.memory)
                    if op.tags:
                        properties["tags"] = list(op.tags)
                    new_vector = await self._vector(tenant, op.embedding)
                    if new_vector is not None:
                        vector, properties["dim"] = new_vector, len(new_vector)
                self.puts[(tenant, key)] = (properties, vector)
            case DropCube(cube_id=cube_id):
                tenant = tenant_name(cube_id)
                self.puts = {k: v for k, v in self.puts.items() if k[0] != tenant}
                self.drops.append(tenant)
                self.tenants[tenant] = False
                self.dims[tenant] = None
            case UpsertRelation():
                return  # edges live in the graph store

    async def execute(self) -> None:
        from weaviate.classes.data import DataObject
        from weaviate.classes.tenants import Tenant

        memories = self.store._memories()
        for tenant in dict.fromkeys(self.drops):
            with map_weaviate_errors(f"drop tenant {tenant!r}"):
                if await memories.tenants.exists(tenant):
                    await memories.tenants.remove([tenant])
        by_tenant: dict[str, list[Any]] = {}
        for (tenant, key), (properties, vector) in self.puts.items():
            by_tenant.setdefault(tenant, []).append(
                DataObject(properties=properties, uuid=key, vector={VECTOR_NAME: vector} if vector else None)
            )
        for tenant, objects in by_tenant.items():
            with map_weaviate_errors(f"create tenant {tenant!r}"):
                if not await memories.tenants.exists(tenant):
                    await memories.tenants.create([Tenant(name=tenant)])
            for start in range(0, len(objects), _BATCH):
                with map_weaviate_errors(f"upsert into {tenant!r}"):
                    result = await memories.with_tenant(tenant).data.insert_many(
                        objects[start : start + _BATCH]
                    )
                if result.has_errors:
                    first = next(iter(result.errors.values()))
                    message = f"weaviate refused {len(result.errors)} object(s) in tenant {tenant!r}: {first}"
                    if "length" in str(first) and "vector" in str(first):
                        raise DimensionMismatch(message)
                    raise StoreError(message)
