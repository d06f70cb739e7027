"""Secrets: where a connector's password comes from, and that nothing shows it."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from supervisor import secrets
from supervisor.errors import SecretError, UnsafeFile
from supervisor.failures import describe_error, describe_failure
from supervisor.logs import configure_logging
from supervisor.secrets import MASK, Secret, SecretRef


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


def test_a_secret_prints_as_a_mask_everywhere() -> None:
    value = Secret("hunter2-correct-horse")
    assert "hunter2" not in repr(value)
    assert "hunter2" not in str(value)
    assert "hunter2" not in f"{value} {[value]} { ({'password': value}) }"
    assert value.reveal() == "hunter2-correct-horse"


def test_a_secret_comes_from_exactly_one_place(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "redis").write_text("from-a-credential")
    environ = {"REDIS_PASSWORD": "from-the-env", "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    read = secrets.read
    assert read(SecretRef("password", value=Secret("inline")), environ) == "inline"
    assert read(SecretRef("password", env="REDIS_PASSWORD"), environ) == "from-the-env"
    # One trailing newline is the editor's, not the password's.
    assert read(SecretRef("password", file=tmp_path / "pw"), environ) == "from-a-file"
    assert read(SecretRef("password", credential="redis"), environ) == "from-a-credential"
    assert read(SecretRef("password"), environ) is None
    both = SecretRef("password", value=Secret("a"), env="REDIS_PASSWORD")
    assert secrets.conflicts(both) == "set at most one of password, password_env"
    assert secrets.conflicts(SecretRef("password", env="X")) is None


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (SecretRef("password", env="UNSET_VARIABLE"), "password_env: the environment variable"),
        (SecretRef("password", file=Path("/nonexistent/pw")), "password_file: cannot read"),
        (SecretRef("password", credential="redis"), "password_credential: $CREDENTIALS_DIRECTORY"),
    ],
)
def test_a_secret_that_cannot_be_read_is_a_fatal_error_naming_the_key(
    ref: SecretRef, expected: str
) -> None:
    with pytest.raises(SecretError, match=expected.replace("$", r"\$")):
        secrets.read(ref, {})


def test_every_secret_read_is_redacted_from_errors_failures_and_logs() -> None:
    """A client library may put the password into its exception or a log line: what the
    daemon shows passes through `redact`."""
    secrets.read(SecretRef("password", env="PW"), {"PW": "s3cr3t-value"})
    error = ConnectionError("AUTH s3cr3t-value failed for redis://app:s3cr3t-value@host:6379")
    assert "s3cr3t" not in describe_error(error)
    try:
        raise error
    except ConnectionError as raised:
        failure = describe_failure(raised, attempts=1, previous=None)
    assert "s3cr3t" not in failure.message
    assert "s3cr3t" not in failure.traceback
    assert MASK in failure.message

    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream, environ={})
    try:
        structlog.get_logger("test").error(
            "job.failed", error="bad s3cr3t-value", detail={"url": "nats://u:s3cr3t-value@h"}
        )
    finally:
        structlog.reset_defaults()
    line = stream.getvalue()
    assert "s3cr3t" not in line
    assert json.loads(line)["detail"] == {"url": f"nats://u:{MASK}@h"}


@given(
    user=st.text(st.characters(blacklist_characters=":@/", blacklist_categories=["Z", "C"])),
    password=st.text(
        st.characters(blacklist_characters="@/", blacklist_categories=["Z", "C"]), min_size=1
    ),
)
def test_redact_url_never_leaves_the_password_of_a_url(user: str, password: str) -> None:
    url = f"redis://{user}:{password}@127.0.0.1:6379/0"
    shown = secrets.redact_url(url)
    assert shown == f"redis://{user}:{MASK}@127.0.0.1:6379/0"


def test_short_secrets_are_not_searched_for_in_free_text() -> None:
    """Masking every "a" in every log line would hide everything and protect nothing."""
    secrets.remember("ab")
    assert secrets.redact("a table") == "a table"


def test_a_password_file_is_never_read_through_a_symlink_or_from_a_fifo(tmp_path: Path) -> None:
    """Whoever can write its directory must not point the daemon at another file, or at a
    FIFO whose read never ends."""
    (tmp_path / "real").write_text("s3cr3t-value\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo")
    for name in ("link", "fifo"):
        with pytest.raises(UnsafeFile):
            secrets.read(SecretRef("password", file=tmp_path / name), {})
