"""A job's ledger: the one owner of its generations, on a real store.

The store writes the generation it is given (tests/unit/test_snapshot_store.py); the
ledger numbers them, so they only grow: each write is the last plus one, a
generation is never named by a caller, a failed write uses its generation up, a
set-aside goes on from the set-aside generation, and a restored older file does
not take them back.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from supervisor.errors import SnapshotWriteError
from supervisor.ledger import JobLedger
from supervisor.snapshot import decode
from supervisor.snapshot_store import SnapshotStore

pytestmark = pytest.mark.anyio


async def ledger_at(tmp_path: Path, generations: int) -> tuple[SnapshotStore, JobLedger]:
    """A ledger of `orders` that has written `generations` generations (offset = 10 * gen),
    then a fresh store and ledger on what it left, as a restarted daemon has them."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    ledger = JobLedger(store, "orders", None)
    for generation in range(1, generations + 1):
        await ledger.write(offset=generation * 10)
    fresh = SnapshotStore(store.directory)
    return fresh, JobLedger(fresh, "orders", await fresh.load("orders"))


def on_disk(store: SnapshotStore) -> tuple[int, object]:
    path = store.path_for("orders")
    snapshot = decode(path.read_bytes(), job="orders", path=path)
    return snapshot.generation, snapshot.offset


async def test_generations_must_grow(tmp_path: Path) -> None:
    """Each write is the last generation plus one, from a loaded snapshot too; a caller
    naming a generation is refused (ValueError) and nothing is written."""
    store, ledger = await ledger_at(tmp_path, 5)
    assert ledger.snapshot.generation == 5
    for generation in (3, 5, 9):
        with pytest.raises(ValueError, match="generations only grow"):
            await ledger.write(offset=0, generation=generation)
    assert on_disk(store) == (5, 50)
    assert (await ledger.write(offset=60)).generation == 6
    assert on_disk(store) == (6, 60)


async def test_a_failed_write_uses_up_its_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that failed may still have reached the disk: its generation is never given
    other contents, so the next write takes the one after it."""
    store, ledger = await ledger_at(tmp_path, 1)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SnapshotWriteError):
        await ledger.write(offset=20)
    monkeypatch.undo()
    assert ledger.offset == 10  # the committed offset did not move
    assert (await ledger.write(offset=30)).generation == 3
    assert on_disk(store) == (3, 30)


async def test_a_set_aside_goes_on_from_the_set_aside_generation(tmp_path: Path) -> None:
    """Files set aside, the next write starts afresh (no offset) at the next generation."""
    store, ledger = await ledger_at(tmp_path, 2)
    await ledger.set_aside("failed")
    assert not store.path_for("orders").exists()
    assert ledger.offset is None
    assert (await ledger.write(offset=5)).generation == 3
    assert on_disk(store) == (3, 5)


async def test_a_restored_older_file_does_not_take_generations_back(tmp_path: Path) -> None:
    """An operator restores generation 1's file over generation 3: the ledger reloads its
    contents but keeps generation 3, and writes 4 next."""
    store, ledger = await ledger_at(tmp_path, 1)
    first = store.path_for("orders").read_bytes()
    await ledger.write(offset=20)
    await ledger.write(offset=30)
    store.path_for("orders").write_bytes(first)
    await ledger.reload()
    assert (ledger.snapshot.generation, ledger.offset) == (3, 10)
    assert (await ledger.write(offset=40)).generation == 4
    assert on_disk(store) == (4, 40)
