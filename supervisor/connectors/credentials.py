"""How a connector logs in, declared once: the four keys of a password, and TLS files.

A connector's connection config inherits `PasswordKeys`: ``password`` (in the job file,
a `Secret` that prints as ``***``), ``password_env``, ``password_file`` and
``password_credential`` (a systemd ``LoadCredential=`` name). At most one may be set
(`supervisor.secrets.conflicts`); the value is read when an attempt opens
(`supervisor.secrets.read`, in a worker thread). A broker's config inherits `LoginKeys`:
those, plus ``tls_ca_file``, ``tls_cert_file`` and ``tls_key_file``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.connectors import kinds
from supervisor.connectors.settings import setting
from supervisor.errors import BrokerRefused
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


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginKeys(PasswordKeys):
    """A password, and the files of a TLS connection: the CA the server is verified with,
    and a client certificate with its key (mutual TLS). Whether TLS is on is the URL's
    business (its scheme), each connector's own."""

    tls_ca_file: Path | None = field(
        default=None,
        metadata=setting(
            kinds.path(), "CA certificates (PEM) the server is verified with; default the system's."
        ),
    )
    tls_cert_file: Path | None = field(
        default=None, metadata=setting(kinds.path(), "A client certificate (PEM), for mutual TLS.")
    )
    tls_key_file: Path | None = field(
        default=None,
        metadata=setting(kinds.path(), "The client certificate's private key (PEM)."),
    )

    def tls_files_set(self) -> bool:
        return any(path is not None for path in (self.tls_ca_file, self.tls_cert_file))

    def tls_problems(self) -> Iterator[tuple[str, str]]:
        """What `supervisor check` refuses in the TLS keys, as (key, problem)."""
        if self.tls_key_file is not None and self.tls_cert_file is None:
            yield "tls_key_file", "a key without a certificate: set tls_cert_file too"

    def tls_context(self) -> ssl.SSLContext:
        """A client context that verifies the server (with `tls_ca_file`, else the system's
        CAs) and presents the client certificate if one is set. Blocking (reads the files):
        call it in a worker thread."""
        context = ssl.create_default_context(
            cafile=str(self.tls_ca_file) if self.tls_ca_file else None
        )
        if self.tls_cert_file:
            context.load_cert_chain(
                str(self.tls_cert_file), str(self.tls_key_file) if self.tls_key_file else None
            )
        return context


_CLIENT_CERTIFICATE_REFUSED = (
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_UNSUPPORTED_CERTIFICATE",
)
"""TLS alerts a server sends when it will not take our client certificate (or its absence)."""


def tls_refused(error: BaseException, role: str, server: str, said: str) -> BrokerRefused | None:
    """`error` as a refusal naming the TLS key to fix, if the handshake failed on a
    certificate: ``tls_ca_file`` when the server's did not verify (against it, or the
    system's CAs), ``tls_cert_file`` when the server refused ours or wanted one; None for
    anything else. Fatal, not a transient network failure: the operator fixes a certificate.
    `said` is the library's message, secrets masked. Client libraries wrap the `ssl` error,
    some only in their text: the chain of causes and the text are both read.

    Best effort on the client certificate: a server that wants one and gets none says only
    "handshake failure" under TLS 1.2 (which a cipher mismatch says too), and under 1.3 its
    alert may lose the race with our first write (a reset connection): both stay transient.
    """
    key = _blamed_tls_key(error)
    if key is None:
        return None
    if key == "tls_ca_file":
        return BrokerRefused(f"{role}.tls_ca_file: cannot verify {server}: {said}")
    return BrokerRefused(f"{role}.tls_cert_file: {server} refused our client certificate: {said}")


def _blamed_tls_key(error: BaseException) -> str | None:
    seen: set[int] = set()
    cause: BaseException | None = error
    text = str(error)
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls_ca_file"
        seen.add(id(cause))
        text += f" {cause}"
        cause = cause.__cause__ or cause.__context__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "tls_ca_file"
    if any(alert in text for alert in _CLIENT_CERTIFICATE_REFUSED):
        return "tls_cert_file"
    return None
