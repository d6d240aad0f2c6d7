"""A replay drops numpy's huge-page hint for new large arrays while it runs, and puts back what was there after
the last of several overlapping replays ends (even when one fails)."""

from __future__ import annotations

import pytest

from streams.replay import _hugepage_switch, small_pages


def _hint() -> bool:
    """numpy's current setting (read by setting it and putting it back)."""
    switch = _hugepage_switch()
    assert switch is not None, "numpy has no huge-page switch (numpy 1.26 and 2.x both have one)"
    current = switch(True)
    switch(current)
    return bool(current)


@pytest.mark.parametrize("before", [True, False])
def test_the_hint_is_off_inside_and_restored_after_the_last_replay(before: bool) -> None:
    switch = _hugepage_switch()
    assert switch is not None
    original = switch(before)
    try:
        with small_pages():
            assert _hint() is False
            with pytest.raises(RuntimeError), small_pages():  # an overlapping replay that fails
                assert _hint() is False
                raise RuntimeError("replay failed")
            assert _hint() is False  # the first replay still runs
        assert _hint() is before
    finally:
        switch(original)
