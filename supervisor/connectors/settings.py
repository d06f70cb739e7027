"""A connector's keys, declared once: on the fields of its frozen config dataclass.

Each field carries its key's kind (a converter from `supervisor.config.schema`)
and doc in its metadata (`setting`); whether the key is required and its default
come from the field itself. `Settings.of` reads them off the dataclass, giving the
strict loader its table of `Field`s and a way to build the dataclass from what
converted. So a key is written in one place, and the loader's checks (unknown
key with a did-you-mean, required key missing, wrong kind) hold for every
connector alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.config.schema import Convert, Field

_SETTING = "supervisor.setting"
"""The metadata key a `setting` is stored under (namespaced: metadata is shared)."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of a connector's table, as declared on its config dataclass's field."""

    convert: Convert | None
    """(raw value, directory for relative paths) -> value; None for `other_keys`."""
    doc: str
    key: str | None = None
    """The TOML key, where it is not the field's name (``class`` is a Python keyword)."""


def setting(convert: Convert, doc: str, *, key: str | None = None) -> dict[str, Setting]:
    """Field metadata declaring a key: ``field(default=..., metadata=setting(kind, doc))``.

    A field without a default (and without a ``default_factory``) is a required key.
    """
    return {_SETTING: Setting(convert, doc, key)}


def other_keys(doc: str) -> dict[str, Setting]:
    """Field metadata for the one field (a mapping) that takes every undeclared key,
    unconverted: the options a ``python`` plugin class is constructed with."""
    return {_SETTING: Setting(None, doc)}


@dataclass(frozen=True, slots=True)
class Key:
    """One key as documentation shows it."""

    name: str
    doc: str
    required: bool
    default: Any
    """The default value, or `dataclasses.MISSING` (required, or a ``default_factory``)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The keys of one config dataclass, and how to build it from converted values."""

    config: type[Any]
    fields: Mapping[str, Field]
    """TOML key -> `Field`: what `supervisor.config.schema.check_table` checks."""
    keys: tuple[Key, ...]
    renamed: Mapping[str, str]
    """TOML key -> field name, for the keys whose names differ."""
    other: str | None
    """The field that takes every undeclared key, if the dataclass has one."""

    @classmethod
    def of(cls, config: type[Any]) -> Settings:
        """Read the keys off `config`; TypeError if it is not a fully declared dataclass."""
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{config!r} is not a dataclass")
        fields: dict[str, Field] = {}
        keys: list[Key] = []
        renamed: dict[str, str] = {}
        other: str | None = None
        for item in dataclasses.fields(config):
            declared = item.metadata.get(_SETTING)
            if not isinstance(declared, Setting):
                raise TypeError(
                    f"field {item.name!r} of {config.__qualname__} declares no key: "
                    "give it metadata=setting(kind, doc)"
                )
            if declared.convert is None:
                if other is not None:
                    raise TypeError(f"{config.__qualname__} has two other_keys fields")
                other = item.name
                continue
            required = (
                item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
            )
            name = declared.key or item.name
            if name == "type":
                raise TypeError(f"{config.__qualname__}: the key 'type' names the connector")
            if declared.key is not None and declared.key != item.name:
                renamed[name] = item.name
            fields[name] = Field(declared.convert, required=required)
            keys.append(Key(name, declared.doc, required, item.default))
        return cls(config, fields, tuple(keys), renamed, other)

    def build(self, values: dict[str, Any]) -> Any:
        """The config dataclass from `check_table`'s output (every declared key converted,
        undeclared ones passed through only when there is an `other` field)."""
        if not self.renamed and self.other is None:
            return self.config(**values)
        arguments: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in values.items():
            if key in self.fields:
                arguments[self.renamed.get(key, key)] = value
            else:
                rest[key] = value
        if self.other is not None:
            arguments[self.other] = rest
        return self.config(**arguments)
