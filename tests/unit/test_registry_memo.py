"""RegistryMemo: answers live for one registry version; a read that straddled a change is not kept."""

from __future__ import annotations

from memos.application.registry_memo import MISSING, RegistryMemo


def test_an_answer_is_kept_for_its_version_only() -> None:
    memo = RegistryMemo()
    assert memo.get(1, "k") is MISSING
    memo.put(1, 1, "k", "owner")
    assert memo.get(1, "k") == "owner"
    assert memo.get(2, "k") is MISSING
    assert memo.get(1, "k") is MISSING  # a version change dropped everything, even going back


def test_a_read_during_a_registry_change_is_not_kept() -> None:
    memo = RegistryMemo()
    assert memo.get(1, "k") is MISSING
    memo.put(1, 2, "k", "write")  # the registry changed while the store was read
    assert memo.get(1, "k") is MISSING
    assert memo.get(2, "k") is MISSING


def test_an_answer_read_at_an_older_version_is_not_kept() -> None:
    memo = RegistryMemo()
    assert memo.get(3, "k") is MISSING
    memo.put(2, 2, "k", "none")  # read began before the memo saw version 3
    assert memo.get(3, "k") is MISSING


def test_the_memo_is_bounded() -> None:
    memo = RegistryMemo(max_entries=3)
    memo.get(1, "a")
    for key in "abcd":
        memo.put(1, 1, key, key)
    assert len(memo) <= 3
    assert memo.get(1, "d") == "d"
