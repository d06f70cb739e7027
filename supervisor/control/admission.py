"""Who the control socket serves: root, the daemon's user and the socket's group, within
limits, and who is dropped to make room.

At most `MAX_CLIENTS` are served at once (and at most a quarter of the process's
file descriptor limit), of which one uid other than root and the daemon's user holds
at most a quarter, `events --follow` clients at most a quarter, and the last few
are kept for root and the daemon's user. When all are taken, the client that has
waited longest without sending a request, or else the oldest follower, is dropped.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from dataclasses import dataclass, field

import anyio
import structlog

from supervisor.control.peer import Peer

log = structlog.get_logger("supervisor.control")

MAX_CLIENTS = 256
"""Clients served at once, and at most a quarter of the process's file
descriptor limit; more are answered "too many clients" and closed, so control
clients can never take the file descriptors the jobs need."""


def client_limit() -> int:
    """`MAX_CLIENTS`, or a quarter of the open-files limit if that is lower (read each time:
    an operator may change it with prlimit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CLIENTS if soft == resource.RLIM_INFINITY else max(min(MAX_CLIENTS, soft // 4), 1)


def follower_limit(limit: int) -> int:
    """`events --follow` clients at once: a quarter of `limit`. 260 idle followers once
    took every slot, and only a client that had sent nothing could be dropped."""
    return max(limit // 4, 1)


def uid_limit(limit: int) -> int:
    """Connections one uid other than root and the daemon's user may hold: a quarter."""
    return max(limit // 4, 1)


def reserved_slots(limit: int) -> int:
    """The last slots, kept for root and the daemon's user (1 in 16)."""
    return min(max(limit // 16, 1), limit - 1)


@dataclass(slots=True)
class Follower:
    """An `events --follow` client; `evicted` says why, once it was dropped to make room."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    evicted: str | None = None


@dataclass(slots=True)
class Served:
    """Who is being served now: how many, per uid, who is still waiting to send a
    request, and who follows events."""

    group: int
    """The socket's group: its members are served."""
    count: int = 0
    by_uid: Counter[int] = field(default_factory=Counter)
    reading: dict[int, anyio.CancelScope] = field(default_factory=dict)
    """The clients yet to send a request line, oldest first (dicts keep order)."""
    following: dict[int, Follower] = field(default_factory=dict)
    """The `events --follow` clients, oldest first."""

    def admit(self, peer: Peer) -> str | None:
        """Count `peer` in, or say why it is refused (the error line it is sent)."""
        privileged = peer.uid in (0, os.geteuid())
        if not privileged and not peer.in_group(self.group):
            log.warning("control.peer_refused", pid=peer.pid, uid=peer.uid)
            if peer.groups is None:
                return (
                    "permission denied: this kernel does not tell the daemon your "
                    f"supplementary groups (SO_PEERGROUPS); use group {self.group} as your "
                    "primary group (sg), or connect as root or the daemon's user"
                )
            return (
                "permission denied: only root, the daemon's user and members of group "
                f"{self.group} may use this socket"
            )
        limit = client_limit()
        if not privileged and self.by_uid[peer.uid] >= uid_limit(limit):
            log.warning("control.uid_limit", uid=peer.uid, limit=uid_limit(limit))
            return (
                f"too many control connections from uid {peer.uid} "
                f"(limit {uid_limit(limit)}): close some and try again"
            )
        room = limit if privileged else limit - reserved_slots(limit)
        if self.count >= room and not self.make_room(limit):
            log.warning("control.too_many_clients", limit=limit)
            return f"too many control clients connected (limit {limit}): try again"
        self.count += 1
        self.by_uid[peer.uid] += 1
        return None

    def leave(self, peer: Peer) -> None:
        self.count -= 1
        self.by_uid[peer.uid] -= 1
        if not self.by_uid[peer.uid]:
            del self.by_uid[peer.uid]

    def make_room(self, limit: int) -> bool:
        """Drop the client that has waited longest without sending a request, or else the
        oldest follower; False if there is neither."""
        if self.reading:
            self.reading.pop(next(iter(self.reading))).cancel()
            return True
        if self.following:
            self._evict_oldest_follower(f"every control client slot was taken (limit {limit})")
            return True
        return False

    def add_follower(self, follower: Follower) -> None:
        """Count a new follower in, dropping the oldest ones beyond `follower_limit`."""
        limit = follower_limit(client_limit())
        while len(self.following) >= limit:  # while: prlimit may have lowered the limit
            self._evict_oldest_follower(f"more than {limit} clients followed events")
        self.following[id(follower)] = follower

    def _evict_oldest_follower(self, why: str) -> None:
        oldest = self.following.pop(next(iter(self.following)))
        oldest.evicted = f"events --follow ended: {why} and this was the oldest; run it again"
        oldest.scope.cancel()
