"""Forgetting: a cube, or a user and what they wrote, removed from the log and every projection, fenced first."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from memory_store.control.base import cube_key, user_key
from memos.application.access import AccessUseCases
from memos.application.errors import CubeBusy, ForgetUnsupported, ProjectorElsewhere
from memos.application.ids import check_id
from memos.application.ports import Platform
from schemas.errors import NotFound
from schemas.events import CubeForgotten, UserForgotten
from streams.log.base import TopicPartition

__all__ = ["ForgetUseCases", "check_forgettable"]


def check_forgettable(platform: Platform) -> None:
    """ForgetUnsupported where the log cannot delete records (a front end may ask before it starts the platform,
    so before joining the deployment's consumer groups): recording the forget would free the cube's id while
    its records stayed readable to the id's next owner (replay, feed)."""
    if not platform.log.forgets:
        raise ForgetUnsupported(
            "this deployment's log (Kafka) cannot delete records, so nothing was forgotten; delete the cube's "
            "memories instead, or forget on the embedded log (topic retention or per-key encryption at scale)")


class ForgetUseCases(AccessUseCases):
    """Forget use cases; mixed into :class:`memos.application.service.MemoryService`."""

    async def forget_cube(self, cube_id: str, *, requested_by: str | None = None) -> None:
        """Remove every trace of a cube from every projection and from the log (owner, or an operator)."""
        cube_id = check_id(cube_id, "cube_id")
        if requested_by is not None:
            await self.authorize(requested_by, cube_id, "owner")
        elif not await self.control.cube_exists(cube_id):
            raise NotFound(f"cube {cube_id!r} does not exist", field="cube_id")
        check_forgettable(self.rt)  # (after the owner check: a caller learns nothing of another's cube)
        await self._projector_here("forget")
        async with self.cube_guard.closed([cube_id]):  # no write to the cube starts; those under way are on the log
            await self._fence(cube_id)  # nothing derived from what is on the log can land after the sweep
            await self._sweep(cube_id, requested_by or "")

    async def _sweep(self, cube_id: str, requested_by: str) -> None:
        """Forget a closed, fenced cube: CubeForgotten, then its records leave the log and the projections."""
        await self._registry([CubeForgotten(**self._event_base(cube_key(cube_id)), cube_id=cube_id,
                                            requested_by=requested_by)])
        await self.rt.forget_records(cube_id)

    async def _projector_here(self, what: str) -> None:
        """ProjectorElsewhere when another process has a live projector on this log (where the log knows its
        members): a replay or forget here would pause only this process's projector and race that one."""
        processes = await self.rt.log.group_processes(self.rt.group("projector"))
        here = (socket.gethostname(), os.getpid())  # how this process appears among the group's members
        elsewhere = [f"{host}:{pid}" for host, pid in processes or () if (host, pid) != here]
        if elsewhere:
            raise ProjectorElsewhere(
                f"another process projects this data ({', '.join(elsewhere)}: memos serve or memos worker); a {what} "
                f"from here would race its projector: ask that process (memos serve: POST /v1/cubes/<cube>/replay, "
                f"the console's forget) or stop it first")

    async def _fence(self, cube_id: str, deadline: float | None = None) -> None:
        """Wait until the stages deriving from the cube's records passed the last one (``derivation_fence``);
        CubeBusy, with nothing changed, when they do not within ``door.forget_wait_s`` (or by ``deadline``, a
        ``time.monotonic()`` time)."""
        from streams.forget import derivation_fence

        async def wait_for(stage: str, targets: Mapping[TopicPartition, int], timeout_s: float) -> None:
            await self.rt.wait_for(stage, targets, timeout_s=timeout_s)

        try:
            timeout_s = self.limits.forget_wait_s if deadline is None else max(0.0, deadline - time.monotonic())
            await derivation_fence(self.rt.log, cube_id, group=self.rt.group, wait_for=wait_for, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise CubeBusy(f"{exc}; nothing was forgotten: retry once derivation has caught up",
                           retry_after=self.limits.forget_wait_s / 4) from None

    async def forget_user(self, user_id: str) -> list[str]:
        """Forget a user: every cube it owns, and everything it wrote into cubes shared with it; returns the
        cubes forgotten."""
        user_id = check_id(user_id, "user_id")
        check_forgettable(self.rt)  # an operator's call: nothing to learn from the order
        if not await self.control.user_exists(user_id):
            raise NotFound(f"user {user_id!r} does not exist", field="user_id")
        await self._projector_here("forget")
        cubes = await self.control.cubes_of(user_id)
        owned = [c.cube_id for c in cubes if c.access == "owner"]
        shared = [c.cube_id for c in cubes if c.access != "owner"]
        async with self.cube_guard.closed(owned + shared):
            deadline = time.monotonic() + self.limits.forget_wait_s  # one wait for all of them
            for cube_id in owned + shared:  # every fence first: a refusal (CubeBusy) leaves everything as it was
                await self._fence(cube_id, deadline)
            for cube_id in owned:  # closed and fenced above
                await self._sweep(cube_id, "")
            await self.rt.forget_user_writes(user_id, shared)
        await self._registry([UserForgotten(**self._event_base(user_key(user_id)), user_id=user_id)])
        await self.rt.forget_records(registry_key=user_key(user_id))
        return owned
