"""KeywordIndex contract on the tantivy adapter, plus its exact per-cube BM25 and crash-safe layout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory_store.embedded.keyword_tantivy import TantivyKeywordIndex
from memory_store.registry import keyword_index_from_url
from tests.contract.keyword_contract import KeywordIndexContract


@pytest.fixture
async def keyword_index(tmp_path: Path) -> AsyncIterator[TantivyKeywordIndex]:
    store = keyword_index_from_url(f"tantivy:///{tmp_path / 'store.db'}")
    assert isinstance(store, TantivyKeywordIndex)
    async with store:
        yield store


class TestTantivyKeywordIndex(KeywordIndexContract):
    """The contract on tantivy, one index folder per cube."""
