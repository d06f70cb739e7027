"""Connectors: the external systems jobs read from and write to, one module each.

A connector module declares a `Connector` (see `supervisor.connectors.registry`)
and is registered as an entry point of the group ``stream_supervisor.connectors``;
docs/connectors.md shows how to write and package one. What a connector module
needs is importable from here: the declaration classes, `setting` and
`other_keys` for its config dataclass's fields, and `kinds`, the kinds of value
a key can hold.
"""

from supervisor.connectors import kinds
from supervisor.connectors.registry import Connector, ProcessorRole, SinkRole, SourceRole
from supervisor.connectors.settings import other_keys, setting

__all__ = ["Connector", "ProcessorRole", "SinkRole", "SourceRole", "kinds", "other_keys", "setting"]
