"""Secrets a connector needs (a broker's password or token): where they come from, and
keeping them out of everything the daemon shows.

A connector declares a secret as four keys with one stem (`SecretRef.of`): the value
itself (``password``), the environment variable holding it (``password_env``), a file
holding it (``password_file``), or a systemd credential (``password_credential``, a
name under ``$CREDENTIALS_DIRECTORY``, which ``LoadCredential=`` fills). At most one may
be set. The value is read when an attempt opens (`read`, blocking: call it in a worker
thread), so a rotated file is picked up by the next attempt.

Every secret read is remembered for the life of the process, and `redact` replaces
each with ``***``: logs, `status`, `events` and failure descriptions all pass through
it, so a client library that puts a password into an exception message (or a URL into
a log line) shows nothing. A URL's own password is masked by `redact_url` wherever a
connector shows its URL.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config.schema import Convert, Invalid, describe
from supervisor.errors import SecretError
from supervisor.safe_open import open_regular

MASK = "***"

MIN_REDACTED = 3
"""Shorter secrets are not searched for in text: every ``a`` would turn into ``***``.
Such a secret is refused nowhere, only not redacted from free text (it is still never
put in a URL or a view by this project)."""

MAX_SECRET_BYTES = 64 * 1024
"""A secret file longer than this is refused: it is not a password."""

_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()  # `read` runs in worker threads


class Secret:
    """A secret value from a job file: it prints as ``***`` everywhere (repr, str, a
    config's repr), and `reveal` gives it to the client library that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return repr(MASK)

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def secret() -> Convert:
    """A string kept as a `Secret`."""

    def convert(value: Any, _base: Path) -> Secret:
        if not isinstance(value, str):
            # Never `describe(value)`: the value is the secret.
            raise Invalid(f"expected a string, got {describe(type(value)())}")
        return Secret(value)

    return convert


def environment_name() -> Convert:
    def convert(value: Any, _base: Path) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise Invalid(f"expected an environment variable name, got {describe(value)}")
        return value

    return convert


def credential_name() -> Convert:
    def convert(value: Any, _base: Path) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.@-]{1,255}", value):
            raise Invalid(
                f"expected a credential name (LoadCredential=NAME), got {describe(value)}"
            )
        if value in {".", ".."}:
            raise Invalid(f"expected a credential name, got {describe(value)}")
        return value

    return convert


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where one secret comes from: what a connector's config holds (never the value
    itself, except as a `Secret`)."""

    stem: str
    """The keys' common name (``password``), for messages."""
    value: Secret | None = None
    env: str | None = None
    file: Path | None = None
    credential: str | None = None

    @classmethod
    def of(cls, config: object, stem: str) -> SecretRef:
        """The secret a connector's config declares with the fields ``STEM`` (a
        `Secret`, kind `secret`), ``STEM_env`` (`environment_name`), ``STEM_file``
        (``path``) and ``STEM_credential`` (`credential_name`)."""
        return cls(
            stem,
            getattr(config, stem),
            getattr(config, f"{stem}_env"),
            getattr(config, f"{stem}_file"),
            getattr(config, f"{stem}_credential"),
        )

    def is_set(self) -> bool:
        return any(item is not None for item in (self.value, self.env, self.file, self.credential))


def conflicts(ref: SecretRef) -> str | None:
    """Why `ref` is ambiguous (more than one source set), or None."""
    keys = [
        key
        for key, item in (
            (ref.stem, ref.value),
            (f"{ref.stem}_env", ref.env),
            (f"{ref.stem}_file", ref.file),
            (f"{ref.stem}_credential", ref.credential),
        )
        if item is not None
    ]
    if len(keys) > 1:
        return f"set at most one of {', '.join(keys)}"
    return None


def read(ref: SecretRef, environ: os._Environ[str] | dict[str, str] | None = None) -> str | None:
    """The secret's value, or None if none is configured. Blocking (a file may be read).

    Raises `SecretError` naming the key (never the value) when the variable is unset,
    the file unreadable, or the credential missing.
    """
    environ = os.environ if environ is None else environ
    value: str | None = None
    if ref.value is not None:
        value = ref.value.reveal()
    elif ref.env is not None:
        value = environ.get(ref.env)
        if value is None:
            raise SecretError(f"{ref.stem}_env: the environment variable {ref.env} is not set")
    elif ref.file is not None:
        value = _read_file(ref.file, f"{ref.stem}_file")
    elif ref.credential is not None:
        directory = environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"{ref.stem}_credential: $CREDENTIALS_DIRECTORY is not set (the service "
                f"needs LoadCredential={ref.credential}:PATH)"
            )
        value = _read_file(Path(directory) / ref.credential, f"{ref.stem}_credential")
    if value is not None:
        remember(value)
    return value


def _read_file(file: Path, key: str) -> str:
    try:
        # Never through a symlink, only a regular file: whoever can write its directory
        # could otherwise point it at a FIFO (a read that never ends) or another file.
        with os.fdopen(open_regular(file, os.O_RDONLY, role=key), "rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"{key}: cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{key}: {file} is longer than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{key}: {file} is not UTF-8 text") from None
    # One trailing newline is the editor's, not the password's.
    return text[:-1] if text.endswith("\n") else text


def remember(value: str) -> None:
    """Redact `value` from everything shown from now on."""
    global _pattern
    if len(value) < MIN_REDACTED or value in _known:
        return
    with _lock:
        _known.add(value)
        # Longest first, so a secret containing another is masked whole.
        alternatives = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(item) for item in alternatives))


_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")


def redact_url(url: str) -> str:
    """`url` with the password of its ``user:password@`` part replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def redact(text: str) -> str:
    """`text` without any secret read so far, nor the password of any URL in it."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = redact_url(text)
    return text


def forget_all() -> None:
    """For tests: remember nothing."""
    global _pattern
    with _lock:
        _known.clear()
        _pattern = None
