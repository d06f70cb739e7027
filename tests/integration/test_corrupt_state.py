"""Corrupt state (issue 5): damaged snapshot files, planted links, unsafe state directories.

One table of damage, each case applied to a state directory holding generations
1 (prev) and 2 (current) of `orders`. Every case is detected and reported by
path; a damaged file is kept (set aside, or left where it is when nothing valid
remains), never deleted; and every planted link points at a sentinel file
outside the state directory whose bytes and mtime must not change, nor may
anything appear beside it. A few of them again through the real daemon, where
an operator sees them: in `supervisor status`, or as the daemon's startup error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.errors import SnapshotError, SnapshotUnsupported
from supervisor.snapshot import Snapshot, decode, encode, seal
from supervisor.snapshot_store import SnapshotStore
from supervisor.states import JobState
from tests.daemon_process import DaemonProcess, write_config

CURRENT, PREV = "orders.snapshot.toml", "orders.snapshot.prev.toml"
STALE_TEMP = ".orders.snapshot.00000000deadbeef.tmp"


def snap(generation: int, job: str = "orders") -> Snapshot:
    return Snapshot(
        job=job,
        generation=generation,
        offset=generation * 100,
        state=JobState.RUNNING,
        written_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class Outside:
    """A sentinel file outside the state directory, and a check that nothing touched it."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "outside"
        self.directory.mkdir()
        self.sentinel = self.directory / "sentinel"
        self.sentinel.write_bytes(b"not a snapshot: must never be written")
        os.utime(self.sentinel, ns=(10**18, 10**18))
        self.before = self.contents()

    def contents(self) -> dict[str, tuple[bytes, int]]:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in self.directory.iterdir()}

    def untouched(self) -> bool:
        return self.contents() == self.before


def damage_current(change: Callable[[bytes], bytes]) -> Callable[[Path, Outside], None]:
    def damage(state: Path, outside: Outside) -> None:
        (state / CURRENT).write_bytes(change((state / CURRENT).read_bytes()))

    return damage


def flip_a_bit(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x04]) + data[middle + 1 :]


def newer_format(data: bytes) -> bytes:
    """The same snapshot as a newer supervisor would seal it: intact, format 3."""
    document = tomllib.loads(data.decode())
    del document["checksum"]
    return seal({**document, "format": 3})


def plant_hard_link(name: str) -> Callable[[Path, Outside], None]:
    def plant(state: Path, outside: Outside) -> None:
        (state / name).unlink(missing_ok=True)
        (state / name).hardlink_to(outside.sentinel)

    return plant


def plant_link(name: str) -> Callable[[Path, Outside], None]:
    def plant(state: Path, outside: Outside) -> None:
        (state / name).unlink(missing_ok=True)
        (state / name).symlink_to(outside.sentinel)

    return plant


@dataclass(frozen=True)
class Damage:
    """What is done to the state directory, and what loading it must then give."""

    do: Callable[[Path, Outside], None]
    name: str
    """The damaged name: reported, and its file kept."""
    loads: int | None
    """The generation load gives; None: load refuses (naming the path) and moves nothing."""
    reason: str


DAMAGE = {
    "zero-length": Damage(damage_current(lambda data: b""), CURRENT, 1, "empty (zero bytes)"),
    "truncated": Damage(damage_current(lambda data: data[:100]), CURRENT, 1, "not valid TOML"),
    "bit-flipped": Damage(damage_current(flip_a_bit), CURRENT, 1, "corrupt snapshot"),
    "wrong-job": Damage(
        damage_current(lambda data: encode(snap(9, job="billing"))),
        CURRENT,
        1,
        "belongs to job 'billing', not 'orders'",
    ),
    "version-digit-damaged": Damage(
        damage_current(lambda data: data.replace(b"format = 2", b"format = 4")),
        CURRENT,
        1,
        "unknown format version 4",
    ),
    "wrong-version": Damage(
        damage_current(newer_format), CURRENT, None, "newer stream-supervisor (format 3"
    ),
    "symlink-at-snapshot": Damage(plant_link(CURRENT), CURRENT, 1, "it is a symlink"),
    # Never followed, and a write never opens an existing file: the linked inode is safe.
    "hard-link-at-snapshot": Damage(plant_hard_link(CURRENT), CURRENT, 1, "not valid TOML"),
    "symlink-at-prev": Damage(plant_link(PREV), PREV, 2, "it is a symlink"),
    "symlink-at-temp": Damage(plant_link(STALE_TEMP), STALE_TEMP, 2, "not a regular file"),
}


def fingerprint(path: Path) -> tuple[str, bytes]:
    """What a kept file is: a link's target, or a file's bytes (never following a link)."""
    if path.is_symlink():
        return "link", os.fsencode(path.readlink())
    return "file", path.read_bytes()


async def prepared(state: Path) -> SnapshotStore:
    store = SnapshotStore(state)
    await store.prepare()
    await store.write(snap(1))
    await store.write(snap(2))
    return store


@pytest.mark.anyio
@pytest.mark.parametrize("case", DAMAGE)
async def test_damage_is_detected_reported_by_path_kept_and_never_written_through(
    tmp_path: Path, case: str
) -> None:
    """Each damaged or planted file is reported by path and kept; load gives the last good
    generation (or refuses, moving nothing); a write then succeeds; nothing outside changes."""
    damage, state, outside = DAMAGE[case], tmp_path / "state", Outside(tmp_path)
    await prepared(state)
    damage.do(state, outside)
    kept = fingerprint(state / damage.name)
    store = SnapshotStore(state)  # a restarted daemon's store
    with capture_logs() as logs:
        await store.prepare()
        if damage.loads is None:
            with pytest.raises(SnapshotUnsupported) as refused:
                await store.load("orders")
            assert str(state / damage.name) in str(refused.value)
            assert damage.reason in str(refused.value)
            with pytest.raises(SnapshotUnsupported):  # nor overwritten by an older writer
                await store.write(snap(3))
            assert fingerprint(state / damage.name) == kept  # left where it is, untouched
            assert outside.untouched()
            return
        loaded = await store.load("orders")
        assert loaded is not None
        assert loaded.generation == damage.loads
        await store.write(snap(3))
    [report] = [e for e in logs if e["event"] == "snapshot.corrupt"]
    assert report["path"] == str(state / damage.name)
    assert damage.reason in report["error"]
    [aside] = [p for p in state.iterdir() if ".broken-" in p.name]
    assert fingerprint(aside) == kept
    assert decode((state / CURRENT).read_bytes(), job="orders", path=state).generation == 3
    assert not [p for p in state.iterdir() if p.suffix == ".tmp"]
    assert outside.untouched()


def symlinked(state: Path, tmp_path: Path) -> list[str]:
    state.rename(tmp_path / "elsewhere")
    state.symlink_to(tmp_path / "elsewhere")
    return ["a symlink or not a directory: refused; set state_dir to a real directory"]


def world_writable(state: Path, tmp_path: Path) -> list[str]:
    state.chmod(0o777)
    return ["is writable by its group or others (mode 0777): refused", f"`chmod go-w {state}`"]


def group_writable(state: Path, tmp_path: Path) -> list[str]:
    state.chmod(0o770)
    return ["is writable by its group or others (mode 0770): refused", f"`chmod go-w {state}`"]


def owned_by_nobody(state: Path, tmp_path: Path) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    os.chown(state, 65534, 65534)
    return ["is owned by uid 65534, not by uid 0 that the supervisor runs as", f"`chown 0 {state}`"]


UNSAFE = {
    "symlink": symlinked,
    "world-writable": world_writable,
    "group-writable": group_writable,
    "owned-by-another-user": owned_by_nobody,
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", UNSAFE)
async def test_an_unsafe_state_directory_is_refused_saying_what_to_do(
    tmp_path: Path, case: str
) -> None:
    """prepare, load and write all refuse a state directory others could write to (or a
    symlink), naming it and the fix; nothing in it, or outside it, changes."""
    state, outside = tmp_path / "state", Outside(tmp_path)
    await prepared(state)
    phrases = UNSAFE[case](state, tmp_path)
    before = {p.name: fingerprint(p) for p in state.iterdir()}
    store = SnapshotStore(state)
    operations: list[Callable[[], Any]] = [
        store.prepare,
        lambda: store.load("orders"),
        lambda: store.write(snap(3)),
    ]
    for operation in operations:
        with pytest.raises(SnapshotError) as refused:
            await operation()
        for phrase in [str(state), *phrases]:
            assert phrase in str(refused.value)
    assert {p.name: fingerprint(p) for p in state.iterdir()} == before
    assert outside.untouched()


JOB_TOML = """\
[source]
type = "generate"
rate = 100
[sink]
type = "null"
"""


def test_the_daemon_shows_damaged_snapshots_in_status_by_path(tmp_path: Path) -> None:
    """Through the real daemon: a job whose only snapshot is empty, and one from a newer
    format, are FAILED with their path in `status`; one with a planted link runs on
    from its previous generation; nothing outside the state directory is written."""
    state, outside = tmp_path / "state", Outside(tmp_path)

    async def write_state() -> None:
        store = SnapshotStore(state)
        await store.prepare()
        for job, generations in (("orders", 1), ("billing", 1), ("clicks", 2)):
            for generation in range(1, generations + 1):
                await store.write(snap(generation, job=job))

    anyio.run(write_state)
    (state / "orders.snapshot.toml").write_bytes(b"")
    billing = state / "billing.snapshot.toml"
    billing.write_bytes(newer_format(billing.read_bytes()))
    (state / "clicks.snapshot.toml").unlink()
    (state / "clicks.snapshot.toml").symlink_to(outside.sentinel)
    config = write_config(tmp_path, dict.fromkeys(("orders", "billing", "clicks"), JOB_TOML))
    daemon = DaemonProcess(config)
    try:
        daemon.wait_for("daemon.started")
        daemon.keep_draining()
        shown = subprocess.run(
            [sys.executable, "-m", "supervisor", "status", "--json", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        assert daemon.stop() == 0
    assert shown.returncode == 3, shown.stderr
    jobs = {view["job"]: view for view in json.loads(shown.stdout)}
    assert jobs["orders"]["state"] == "failed"
    assert (
        f"corrupt snapshot {state / 'orders.snapshot.toml'}: the file is empty"
        in (jobs["orders"]["error"])
    )
    assert jobs["billing"]["state"] == "failed"
    assert (
        f"snapshot {billing} was written by a newer stream-supervisor" in jobs["billing"]["error"]
    )
    assert jobs["clicks"]["error"] is None
    assert jobs["clicks"]["state"] in ("pending", "running")
    assert (state / "orders.snapshot.toml").read_bytes() == b""  # kept where it was
    [aside] = [p for p in state.iterdir() if p.name.startswith("clicks.snapshot.broken-")]
    assert aside.readlink() == outside.sentinel
    assert outside.untouched()


def test_the_daemon_will_not_start_on_a_world_writable_state_directory(tmp_path: Path) -> None:
    """`supervisor run` exits 1 naming the state directory and the chmod that fixes it,
    before it writes anything or binds its socket."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    config = write_config(tmp_path, {"orders": JOB_TOML})
    run = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert f"state directory {state} is writable by its group or others" in run.stderr
    assert f"`chmod go-w {state}`" in run.stderr
    assert list(state.iterdir()) == []
    assert not (tmp_path / "supervisor.sock").exists()
