"""The door's shared state (gates, guards, counts) kept once per runtime, so every front end over it shares it."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar, cast

__all__ = ["shared"]

T = TypeVar("T")

_SHARED: weakref.WeakKeyDictionary[object, dict[type, object]] = weakref.WeakKeyDictionary()


def shared(owner: object, kind: type[T], make: Callable[[], T]) -> T:
    """The one ``kind`` of ``owner`` (a runtime), made by ``make`` on first use; it goes with its owner."""
    of_owner = _SHARED.setdefault(owner, {})
    found = of_owner.get(kind)
    if found is None:
        found = of_owner[kind] = make()
    return cast(T, found)
