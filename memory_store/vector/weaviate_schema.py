"""How memories map onto Weaviate: collection schema, tenant names, object UUIDs and properties, BM25 terms,
and the translation of client errors. Shared by the vector and keyword projections.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from schemas.errors import StoreBackpressure, StoreError, StoreUnavailable
from schemas.memory import MemoryRecord
from schemas.text import times_in_words

__all__ = [
    "COLLECTION_NAME",
    "UUID_NS",
    "VECTOR_NAME",
    "ensure_collections",
    "import_weaviate",
    "indexed_terms",
    "keyword_terms",
    "map_weaviate_errors",
    "object_properties",
    "object_uuid",
    "tenant_name",
]

logger = logging.getLogger(__name__)

UUID_NS = uuid.UUID("3f0c9f5e-5d0b-4d55-9a55-6d656d6f7331")
"""Namespace of the uuid5 object ids (memory ids, checkpoint keys)."""
VECTOR_NAME = "default"
"""The one named vector of a memory collection."""
COLLECTION_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")
_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")


def tenant_name(cube_id: str) -> str:
    """The Weaviate tenant of a cube: the cube id itself when valid, else ``c_`` + its sha1."""
    if _TENANT.match(cube_id):
        return cube_id
    return "c_" + hashlib.sha1(cube_id.encode()).hexdigest()


def indexed_terms(key: str, memory: str) -> str:
    """The ``terms`` property BM25 searches: the key and the memory with its times in words, as terms."""
    return " ".join(keyword_terms(f"{key} {times_in_words(memory)}"))


def keyword_terms(text: str) -> list[str]:
    """BM25 terms: case-folded words; CJK runs become their characters plus character bigrams."""
    terms: list[str] = []
    for word in _WORD.findall(text.casefold()):
        start = 0
        for run in _CJK.finditer(word):
            if run.start() > start:
                terms.append(word[start : run.start()])
            chars = run.group()
            terms.extend(chars)
            terms.extend(chars[i : i + 2] for i in range(len(chars) - 1))
            start = run.end()
        if start < len(word):
            terms.append(word[start:])
    return terms


def object_uuid(memory_id: str) -> uuid.UUID:
    return uuid.uuid5(UUID_NS, memory_id)


@contextmanager
def map_weaviate_errors(what: str) -> Iterator[None]:
    """Translate weaviate-client errors into StoreUnavailable / StoreBackpressure / StoreError."""
    from weaviate import exceptions as wv

    try:
        yield
    except (wv.WeaviateConnectionError, wv.WeaviateTimeoutError, wv.WeaviateGRPCUnavailableError,
            wv.WeaviateClosedClientError, OSError) as exc:  # fmt: skip
        raise StoreUnavailable(f"weaviate unavailable during {what}: {type(exc).__name__}: {exc}") from exc
    except wv.UnexpectedStatusCodeError as exc:
        if exc.status_code == 429:
            raise StoreBackpressure(f"weaviate throttled {what}: {exc}", retry_after=1.0) from exc
        if exc.status_code in (502, 503, 504):
            raise StoreUnavailable(f"weaviate unavailable during {what}: {exc}") from exc
        raise StoreError(f"weaviate failed during {what}: {exc}") from exc
    except wv.WeaviateBaseError as exc:
        raise StoreError(f"weaviate failed during {what}: {type(exc).__name__}: {exc}") from exc


def import_weaviate() -> Any:
    try:
        import weaviate
    except ImportError as exc:
        raise ImportError(
            'the Weaviate stores need weaviate-client: pip install "memos-stream[weaviate]"'
        ) from exc
    return weaviate


def object_properties(record: MemoryRecord, dim: int) -> dict[str, Any]:
    """Properties of a memory's Weaviate object (``dim``: length of its vector, 0 for none)."""
    return {
        "memory_id": record.id, "cube_id": record.cube_id, "user_id": record.user_id,
        "memory_type": record.memory_type, "status": record.status, "key": record.key,
        "memory": record.memory, "terms": indexed_terms(record.key, record.memory),
        "tags": list(record.tags), "dim": dim, "created_at": record.created_at, "updated_at": record.updated_at,
    }  # fmt: skip


async def ensure_collections(
    client: Any, collection: str, checkpoint_collection: str, *, keeps_vectors: bool
) -> None:
    """Create the memory collection (multi-tenant, one named self-provided vector) and the checkpoint
    collection when missing. Idempotent; a concurrent creator is fine."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
    from weaviate.exceptions import UnexpectedStatusCodeError

    def text(name: str, tokenization: Tokenization = Tokenization.FIELD, searchable: bool = False) -> Any:
        return Property(name=name, data_type=DataType.TEXT, tokenization=tokenization,
                        index_searchable=searchable, skip_vectorization=True)  # fmt: skip

    index = (
        Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
        if keeps_vectors
        else Configure.VectorIndex.flat()
    )
    memory_properties = [
        text("memory_id"), text("cube_id"), text("user_id"), text("memory_type"), text("status"), text("key"),
        text("memory", Tokenization.WORD, searchable=not keeps_vectors),
        text("terms", Tokenization.WHITESPACE, searchable=True),
        Property(name="tags", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.FIELD),
        Property(name="dim", data_type=DataType.INT),
        Property(name="created_at", data_type=DataType.DATE),
        Property(name="updated_at", data_type=DataType.DATE),
    ]  # fmt: skip
    checkpoint_properties = [
        text("projection"), text("topic"),
        Property(name="partition", data_type=DataType.INT), Property(name="offset", data_type=DataType.INT),
    ]  # fmt: skip
    specs = [
        (collection, memory_properties, index, Configure.multi_tenancy(enabled=True, auto_tenant_creation=True,
                                                                           auto_tenant_activation=True)),
        (checkpoint_collection, checkpoint_properties, Configure.VectorIndex.flat(), None),
    ]  # fmt: skip
    for name, properties, vector_index, tenancy in specs:
        if await client.collections.exists(name):
            continue
        try:
            await client.collections.create(
                name,
                properties=properties,
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR_NAME, vector_index_config=vector_index
                ),
                multi_tenancy_config=tenancy,
                inverted_index_config=Configure.inverted_index(index_null_state=False),
            )
        except UnexpectedStatusCodeError as exc:  # a concurrent creator won the race: fine
            if "already exists" not in str(exc):
                raise
