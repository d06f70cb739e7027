"""What a connector declares, and finding the installed ones by their ``type``.

A connector is one module that declares a `Connector`: its ``type`` name, a
one-line doc and, for each role it plays, its frozen config dataclass (whose
fields declare its keys, see `supervisor.connectors.settings`) and a builder.
Connectors are registered as Python entry points in the group `GROUP`, named by
their type, with a ``module:OBJECT`` value naming the declaration; this
project's own connectors are registered in its ``pyproject.toml`` exactly as a
third-party package registers its own.

The entry points are read once per process (`installed`); a connector's module
is imported only when a job names its type. A connector that cannot be used (its
module fails to import, its object is not a `Connector`, or its type is
registered more than once) is a problem of the jobs that name it, reported with
the type, the distribution and the error; it never stops the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from supervisor.connectors.settings import Settings
from supervisor.errors import PluginError
from supervisor.plugins import load_reference

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy, ConnectorConfig, JobConfig
    from supervisor.protocols import BatchFunction, Offset, Sink, Source

GROUP = "stream_supervisor.connectors"
"""The entry point group connectors are registered in."""
DISTRIBUTION = "stream-supervisor"
"""This project's distribution, which registers the built-in connectors."""

Role: TypeAlias = Literal["source", "sink", "processor"]
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}", re.ASCII)

C = TypeVar("C")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Part(Generic[C]):
    config: type[C]
    """The frozen dataclass a ``[source]``/``[sink]`` table (without ``type``) becomes."""
    references: Callable[[C], Sequence[tuple[str, str]]] | None = None
    """``(key, "package.module:Name")`` pairs the config names: `supervisor check` imports
    each (and constructs nothing), as it does the ``class`` of a ``python`` connector."""
    check_job: Callable[[C, CheckpointPolicy], Iterable[tuple[str, str]]] | None = None
    """``(key, problem)`` pairs for keys that are each valid but do not fit the job's
    ``[checkpoint]`` policy (a broker that would redeliver before a checkpoint is due,
    say): `supervisor check` and every load report each at ``source.KEY``/``sink.KEY``."""
    settings: Settings = field(init=False)
    """The keys, read off `config`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", Settings.of(self.config))


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRole(_Part[C]):
    """What a connector needs to be a ``[source]``."""

    build: Callable[[C, JobConfig], Source]
    """A fresh, unopened source for one attempt; import heavy modules in here."""
    check_offset: Callable[[C, Offset], None] | None = None
    """Raise ValueError (saying why) for an offset the source's `open` would refuse:
    `supervisor offset JOB --set` asks it, in a worker thread, before storing one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkRole(_Part[C]):
    """What a connector needs to be a ``[sink]``."""

    build: Callable[[C, JobConfig], Sink]
    """A fresh, unopened sink for one attempt; import heavy modules in here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorRole(_Part[C]):
    """What a connector needs to be a ``[processor]`` with a ``type`` (the ``exec`` one)."""

    build: Callable[[C, JobConfig], BatchFunction]
    """A fresh, unopened batch processor for one attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Connector:
    """One connector's declaration: the object its entry point names."""

    type: str
    """The ``type = "..."`` of the tables it reads; also its entry point's name."""
    doc: str
    """One line: what it connects to."""
    source: SourceRole[Any] | None = None
    sink: SinkRole[Any] | None = None
    processor: ProcessorRole[Any] | None = None

    def __post_init__(self) -> None:
        if not TYPE_PATTERN.fullmatch(self.type):
            raise ValueError(f"connector type {self.type!r} must match {TYPE_PATTERN.pattern}")
        if self.source is None and self.sink is None and self.processor is None:
            raise ValueError(f"connector {self.type!r} declares no source, sink or processor")

    def role(self, role: Role) -> SourceRole[Any] | SinkRole[Any] | ProcessorRole[Any] | None:
        return {"source": self.source, "sink": self.sink, "processor": self.processor}[role]


@dataclass(frozen=True, slots=True)
class Registration:
    """One entry point of `GROUP`: a type, where its declaration is, who registered it."""

    type: str
    reference: str
    """``module:OBJECT``."""
    distribution: str
    """The registering distribution's name, or ``""`` when unknown."""
    version: str = ""

    def describe(self) -> str:
        if not self.distribution:
            return f"{self.reference} (no distribution)"
        version = f" {self.version}" if self.version else ""
        return f'{self.reference} (distribution "{self.distribution}"{version})'


class Registry:
    """The registered connectors by type; each is loaded on first use, once."""

    def __init__(self, registrations: Iterable[Registration], *, problem: str | None = None):
        self._registered: dict[str, list[Registration]] = {}
        for registration in registrations:
            self._registered.setdefault(registration.type, []).append(registration)
        self._loaded: dict[str, Connector | str] = {}
        """Each type once loaded: its connector, or why it cannot be used."""
        self.problem = problem
        """Why connectors one expects are missing (this project is not installed)."""

    @classmethod
    def discover(cls) -> Registry:
        """The connectors the installed distributions register (`installed` caches this)."""
        # Imported here: it is costly, and only loading job files needs it (not
        # `supervisor status` and the other commands that only read the daemon file).
        import importlib.metadata

        found = [
            Registration(
                entry.name,
                entry.value,
                entry.dist.name if entry.dist else "",
                entry.dist.version if entry.dist else "",
            )
            for entry in importlib.metadata.entry_points(group=GROUP)
        ]
        return cls(found, problem=_own_problem(found))

    @property
    def registrations(self) -> list[Registration]:
        return [entry for entries in self._registered.values() for entry in entries]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._registered

    def get(self, type_name: str) -> Connector:
        """The connector registered as `type_name`, loaded; `PluginError` saying why it
        cannot be used (KeyError if nothing registers it)."""
        loaded = self._loaded.get(type_name)
        if loaded is None:
            loaded = self._loaded[type_name] = self._load(self._registered[type_name])
        if isinstance(loaded, str):
            raise PluginError(loaded)
        return loaded

    def role(
        self, type_name: str, role: Role
    ) -> SourceRole[Any] | SinkRole[Any] | ProcessorRole[Any] | None:
        """What the connector registered as `type_name` declares for `role`: None if
        nothing registers the type or its connector does not play that role;
        `PluginError` saying why if it cannot be used."""
        connector = self._loaded.get(type_name)
        if not isinstance(connector, Connector):
            if type_name not in self._registered:
                return None
            connector = self.get(type_name)
        return connector.role(role)

    def types(self, role: Role) -> list[str]:
        """The usable types that can be a `role`, sorted (this loads every connector)."""
        return [connector.type for connector in self.load_all() if connector.role(role) is not None]

    def load_all(self) -> list[Connector]:
        """Every usable connector, by type; those that cannot be used are left out."""
        usable = []
        for type_name in sorted(self._registered):
            try:
                usable.append(self.get(type_name))
            except PluginError:
                continue
        return usable

    def _load(self, registrations: list[Registration]) -> Connector | str:
        first = registrations[0]
        if len(registrations) > 1:
            # Neither wins: which one would depend on the order of sys.path, and
            # the other one's jobs would silently run someone else's code.
            listed = "; ".join(registration.describe() for registration in registrations)
            return (
                f'connector type "{first.type}" is registered more than once: {listed}; '
                "uninstall all but one"
            )
        where = f'connector "{first.type}" from {first.describe()}'
        try:
            connector = load_reference(first.reference)
        except PluginError as exc:
            return f"{where} cannot be loaded: {exc}"
        if not isinstance(connector, Connector):
            return f"{where} is {type(connector).__name__!r}, not a Connector"
        if connector.type != first.type:
            return f'{where} declares type "{connector.type}" instead'
        parts = (connector.source, connector.sink, connector.processor)
        configs = [part.config for part in parts if part is not None]
        for config in configs:
            owner = _DECLARED.get(config, connector)
            if owner is not connector:
                return (
                    f"{where} declares {config.__qualname__}, the config class of "
                    f'connector "{owner.type}": each connector declares its own'
                )
        _DECLARED.update(dict.fromkeys(configs, connector))
        return connector


_DECLARED: dict[type[Any], Connector] = {}
"""Config class -> the connector declaring it, for every connector loaded so far."""
_installed: Registry | None = None


def installed() -> Registry:
    """The registry of the installed distributions, discovered on first use."""
    global _installed
    if _installed is None:
        _installed = Registry.discover()
    return _installed


def connector_for(config: ConnectorConfig) -> Connector:
    """The connector that declares `config`'s class.

    A job's config was built by loading its connector; one built in code (a test)
    finds it by loading every installed connector once.
    """
    connector = _DECLARED.get(type(config))
    if connector is None:
        installed().load_all()
        connector = _DECLARED.get(type(config))
    if connector is None:
        cls = type(config)
        raise LookupError(f"no loaded connector declares {cls.__module__}.{cls.__qualname__}")
    return connector


def source_role(config: ConnectorConfig) -> SourceRole[Any]:
    role = connector_for(config).source
    if role is None:
        raise LookupError(f"{type(config).__qualname__} does not configure a source")
    return role


def sink_role(config: ConnectorConfig) -> SinkRole[Any]:
    role = connector_for(config).sink
    if role is None:
        raise LookupError(f"{type(config).__qualname__} does not configure a sink")
    return role


def _own_problem(found: Sequence[Registration]) -> str | None:
    """Why this project's own connectors are missing from `found`, if they are."""
    import importlib.metadata

    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return (
            f"the {DISTRIBUTION} package is not installed, so no connector is registered "
            "(even its own are entry points of the installed package): install it, "
            "e.g. pip install -e ."
        )
    if not any(_normalized(entry.distribution) == DISTRIBUTION for entry in found):
        return (
            f"the installed {DISTRIBUTION} package registers no connectors (its metadata "
            "is older than its connector entry points): reinstall it, e.g. pip install -e ."
        )
    return None


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def processor_role(config: ConnectorConfig) -> ProcessorRole[Any]:
    role = connector_for(config).processor
    if role is None:
        raise LookupError(f"{type(config).__qualname__} does not configure a processor")
    return role
