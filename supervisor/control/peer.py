"""Who a control client is: its credentials and groups as the kernel recorded them
at connect (SO_PEERCRED, SO_PEERGROUPS), never read from /proc by its pid."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux 4.13+: the client's supplementary groups as they were when it connected."""
_GROUPS_IN_PYTHON_BUFFER = 256
"""`socket.getsockopt` takes a buffer of at most 1,024 bytes: 256 gid_t."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A client as the kernel recorded it at connect (not as its pid reads now)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] | None
    """Supplementary groups; None if the kernel cannot tell (before Linux 4.13)."""

    def in_group(self, group: int) -> bool:
        return self.gid == group or (self.groups is not None and group in self.groups)


def peer_of(sock: socket.socket) -> Peer:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: socket.socket) -> frozenset[int] | None:
    """The client's supplementary groups, from the socket itself.

    They used to be read from /proc/PID/status, on the event loop: a client that
    exited could have its pid reused by another user's process before the read, and
    with the unit's ProtectProc=invisible the daemon cannot read others' /proc at all.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * _GROUPS_IN_PYTHON_BUFFER)
    except OSError as exc:
        if exc.errno == errno.ERANGE:
            raw = _peer_groups_unbounded(sock.fileno())
        elif exc.errno in (errno.ENOPROTOOPT, errno.EINVAL):
            return None
        else:
            raise
    return frozenset(struct.unpack(f"{len(raw) // 4}I", raw))


def _peer_groups_unbounded(fd: int) -> bytes:
    """SO_PEERGROUPS for a client in more groups than `socket.getsockopt` has room for."""
    size = 4 * os.sysconf("SC_NGROUPS_MAX")
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buffer, ctypes.byref(length)):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buffer.raw[: length.value]
