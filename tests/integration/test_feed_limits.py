"""Open feeds are bounded per user and end when the key they were opened with is revoked."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from memos.application.errors import FeedsBusy, retry_after, status_of
from memos.application.feeds import feed_slots_for
from memos.application.service import MemoryService
from memos.runtime import Runtime
from streams.settings import AppSettings


async def test_a_feed_ends_once_its_key_is_revoked(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path)) as rt:
        service = MemoryService(rt)
        await service.create_user("ann")
        key_id = (await service.issue_key("ann")).split("_")[1]
        other = await service.issue_key("ann")
        await service.add("ann", ["notes"], [{"role": "user", "content": "Pixel turned two."}], mode="fast")
        changes = await service.feed("ann", ["notes"], start="beginning", follow=True, key_id=key_id)
        feed = aiter(changes)
        first, _ = await anext(feed)
        assert first.event.event_type == "MemoryAdded"
        await service.revoke_key(key_id, user_id="ann")
        assert not await service.key_active("ann", key_id) and other
        await service.add("ann", ["notes"], [{"role": "user", "content": "Pixel hides under the stairs."}],
                          mode="fast")
        after = [envelope async for envelope, _ in feed]  # ends: nothing more reaches the revoked key
        assert after == []
        assert feed_slots_for(rt).open["ann"] == 0


async def test_a_user_may_hold_only_so_many_feeds_and_a_closed_or_dropped_one_frees_its_slot(tmp_path: Path) -> None:
    async with Runtime(AppSettings(home=tmp_path, door={"feeds_per_user": 2})) as rt:
        service = MemoryService(rt)
        for user in ("ann", "bob"):
            await service.create_user(user)
            await service.add(user, [f"{user}_notes"], [{"role": "user", "content": "Tea at five."}], mode="fast")
        feeds = [await service.feed("ann", None, start="now") for _ in range(2)]
        with pytest.raises(FeedsBusy, match="door.feeds_per_user") as refused:
            await service.feed("ann", None, start="now")
        assert status_of(refused.value) == 429 and retry_after(refused.value) is not None
        assert await service.feed("bob", None, start="now") is not None  # another user is not held by ann's
        await feeds[0].aclose()  # a closed feed frees its slot
        third = await service.feed("ann", None, start="beginning", follow=False)
        assert [e async for e, _ in third]  # read to its end, which frees its slot too
        del feeds[1]  # dropped unread
        gc.collect()
        assert feed_slots_for(rt).open["ann"] == 0
