"""The ``postgres`` sink's keys: what `supervisor check` refuses, and that it needs no
psycopg to do so."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.config.loader import load_config
from supervisor.errors import ConfigError


def _issues(tmp_path: Path, sink: str) -> list[str]:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    (tmp_path / "supervisor.toml").write_text("")
    (tmp_path / "jobs" / "j.toml").write_text(
        'name = "j"\n[source]\ntype = "generate"\n[sink]\ntype = "postgres"\n'
        + textwrap.dedent(sink)
    )
    try:
        load_config(tmp_path / "supervisor.toml", environ={})
    except ConfigError as exc:
        return [issue.where + ": " + issue.message for issue in exc.issues]
    return []


GOOD = 'url = "postgresql://u@h/db"\ntable = "t"\ncolumns = ["a", "b"]\n'


def test_a_good_sink_passes(tmp_path: Path) -> None:
    assert _issues(tmp_path, GOOD) == []
    assert _issues(tmp_path, GOOD + 'mode = "upsert"\nkey = ["a"]\n') == []


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('url = "mysql://h/db"\ntable = "t"\ncolumns = ["a"]', "sink.url: expected a postgresql"),
        ('url = "postgresql://h:99999/db"\ntable = "t"\ncolumns = ["a"]', "sink.url: expected"),
        ('url = "postgresql://h/db"\ntable = "a b"\ncolumns = ["a"]', "sink.table: expected"),
        ('url = "postgresql://h/db"\ntable = "t"\ncolumns = []', "sink.columns: expected"),
        ('url = "postgresql://h/db"\ntable = "t"\ncolumns = ["a", "a"]', "each column once"),
        ('url = "postgresql://h/db"\ntable = "t"\ncolumns = { "a;" = "x" }', "sink.columns"),
        (GOOD + 'mode = "upsert"', 'sink.key: mode "upsert" needs the key'),
        (GOOD + 'mode = "upsert"\nkey = ["c"]', "sink.key: c not among `columns`"),
        (GOOD + 'key = ["a"]', 'sink.key: only for mode = "upsert"'),
        (GOOD + 'offsets_table = "t"', "sink.offsets_table: must not be"),
        (GOOD + 'password = "x"\npassword_env = "P"', "sink.password: set at most one"),
        (GOOD + 'sslmode = "sometimes"', "sink.sslmode: expected one of"),
    ],
)
def test_wrong_keys_are_refused_naming_the_key(tmp_path: Path, keys: str, expected: str) -> None:
    issues = _issues(tmp_path, keys + "\n")
    assert any(expected in issue for issue in issues), issues


def test_a_password_in_the_url_is_never_shown(tmp_path: Path) -> None:
    issues = _issues(
        tmp_path,
        'url = "postgresql://u:Sup3rSecret@h/db"\ntable = "t"\ncolumns = ["a"]\n'
        'password_env = "P"\n',
    )
    assert issues == ["sink.password: the URL has a password already: set it in one place"]
    issues = _issues(tmp_path, 'url = "postgresql://u@h/db?password=Sup3rSecret"\n')
    assert issues and not any("Sup3rSecret" in issue for issue in issues)


def test_check_needs_no_psycopg(tmp_path: Path) -> None:
    """Loading a job of this type imports neither psycopg nor the sink module."""
    _issues(tmp_path, GOOD)
    code = (
        "import sys\nfrom pathlib import Path\nfrom supervisor.config.loader import load_config\n"
        f"load_config(Path({str(tmp_path / 'supervisor.toml')!r}), environ={{}})\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "assert 'supervisor.connectors.postgres.sink' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
