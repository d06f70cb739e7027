"""The four keys of a password, declared once for every connector that logs in.

A connector's connection config inherits `PasswordKeys`: ``password`` (in the job file,
a `Secret` that prints as ``***``), ``password_env``, ``password_file`` and
``password_credential`` (a systemd ``LoadCredential=`` name). At most one may be set
(`supervisor.secrets.conflicts`); the value is read when an attempt opens
(`supervisor.secrets.read`, in a worker thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from supervisor.connectors import kinds
from supervisor.connectors.settings import setting
from supervisor.secrets import Secret, SecretRef


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordKeys:
    """Where the password comes from: one of four keys, or none."""

    password: Secret | None = field(
        default=None,
        metadata=setting(kinds.secret(), "The password, in the job file (prefer the keys below)."),
    )
    password_env: str | None = field(
        default=None,
        metadata=setting(kinds.environment_name(), "Environment variable holding the password."),
    )
    password_file: Path | None = field(
        default=None, metadata=setting(kinds.path(), "File holding the password (one line).")
    )
    password_credential: str | None = field(
        default=None,
        metadata=setting(
            kinds.credential_name(),
            "systemd credential (LoadCredential=NAME:PATH) holding the password, read from "
            "$CREDENTIALS_DIRECTORY.",
        ),
    )

    def password_ref(self) -> SecretRef:
        return SecretRef.of(self, "password")
