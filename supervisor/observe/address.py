"""`[supervisor] http_listen`: a "host:port" address, and whether it is only this host's."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from supervisor.config.schema import Convert, Invalid, describe

_FORM = 'an address like "127.0.0.1:9321" or "[::1]:9321"'


def parse_listen(text: str) -> tuple[str, int]:
    """("127.0.0.1", 9321) from "127.0.0.1:9321"; ("::1", 9321) from "[::1]:9321";
    ValueError if it is not such an address. Port 0 picks a free one."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"expected {_FORM}, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"expected a port of 0 to 65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"expected an IPv6 address in [], got {text!r}") from None
    elif ":" in host or not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError(f"expected {_FORM} (IPv6 in brackets), got {text!r}")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether `host` reaches only this machine (a name other than localhost: not known)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_address() -> Convert:
    def convert(value: Any, _: Path) -> tuple[str, int]:
        if not isinstance(value, str):
            raise Invalid(f"expected {_FORM}, got {describe(value)}")
        try:
            return parse_listen(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return convert
