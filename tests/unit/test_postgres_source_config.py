"""The ``postgres`` table source's and the ``postgres-cdc`` source's keys: what
`supervisor check` refuses, naming the key, with no server and no psycopg needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.config.loader import load_config
from supervisor.errors import ConfigError


def _issues(tmp_path: Path, source: str) -> list[str]:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    (tmp_path / "supervisor.toml").write_text("")
    (tmp_path / "jobs" / "j.toml").write_text(
        'name = "j"\n[source]\n' + textwrap.dedent(source) + '\n[sink]\ntype = "null"\n'
    )
    try:
        load_config(tmp_path / "supervisor.toml", environ={})
    except ConfigError as exc:
        return [issue.where + ": " + issue.message for issue in exc.issues]
    return []


TABLE = 'type = "postgres"\nurl = "postgresql://u@h/db"\ntable = "t"\n'
CDC = 'type = "postgres-cdc"\nurl = "postgresql://u@h/db"\nslot = "s"\npublication = "p"\n'


def test_good_sources_pass(tmp_path: Path) -> None:
    assert _issues(tmp_path, TABLE) == []
    assert _issues(tmp_path, TABLE + 'columns = ["a"]\nstart = "end"\nnotify_channel = "c"') == []
    assert _issues(tmp_path, CDC + 'heartbeat_interval = "2s"\ncreate_slot = false') == []


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (TABLE + 'xid_column = "id"', "source.id_column: must not be the xid column"),
        (TABLE + 'start = "middle"', "source.start: expected one of"),
        (TABLE + 'notify_channel = "a b"', "source.notify_channel: expected a channel name"),
        (TABLE + 'poll_interval = "0s"', "source.poll_interval: expected a duration of more"),
        (TABLE + "lag_limit = 0", "source.lag_limit: expected an integer of at least 1"),
        (TABLE + 'slot = "s"', 'source.slot: unknown key "slot"'),
        (TABLE + 'password = "x"\npassword_file = "/p"', "source.password: set at most one"),
        (CDC.replace('slot = "s"', 'slot = "Bad-Slot"'), "source.slot: expected a slot name"),
        (CDC.replace('publication = "p"\n', ""), "source.publication: required key"),
        (CDC + 'table = "t"', 'source.table: unknown key "table"'),
        (CDC + "peek_changes = 0", "source.peek_changes: expected an integer of at least 1"),
    ],
)
def test_wrong_keys_are_refused_naming_the_key(tmp_path: Path, keys: str, expected: str) -> None:
    issues = _issues(tmp_path, keys)
    assert any(expected in issue for issue in issues), issues
