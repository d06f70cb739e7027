"""The ``python`` connector: a third-party `Source` or `Sink` class named in the job file.

``class = "package.module:Name"`` is constructed as ``Name(**options)``, the options
being every other key of the table, unconverted. The class is imported when an
attempt starts (and by `supervisor check`), never while the daemon loads its
configuration: a class that cannot be loaded fails its own job only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from supervisor.connectors import Connector, SinkRole, SourceRole, kinds, other_keys, setting
from supervisor.errors import PluginError
from supervisor.plugins import REFERENCE_PATTERN, load_callable, load_reference
from supervisor.protocols import Sink, Source

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Offset

_REFERENCE = kinds.text(REFERENCE_PATTERN, 'a reference like "package.module:Name"')
_CLASS_DOC = 'The class, as "package.module:Name".'
_OPTIONS_DOC = "Every other key: the keyword arguments the class is constructed with."


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonSourceConfig:
    """``type = "python"``: a third-party `Source` class, built as ``cls(**options)``."""

    class_ref: str = field(metadata=setting(_REFERENCE, _CLASS_DOC, key="class"))
    options: Mapping[str, Any] = field(default_factory=dict, metadata=other_keys(_OPTIONS_DOC))


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonSinkConfig:
    """``type = "python"``: a third-party `Sink` class, built as ``cls(**options)``."""

    class_ref: str = field(metadata=setting(_REFERENCE, _CLASS_DOC, key="class"))
    options: Mapping[str, Any] = field(default_factory=dict, metadata=other_keys(_OPTIONS_DOC))


def _build_source(config: PythonSourceConfig, job: JobConfig) -> Source:
    return cast(Source, _construct(config.class_ref, config.options, Source, "source"))


def _build_sink(config: PythonSinkConfig, job: JobConfig) -> Sink:
    return cast(Sink, _construct(config.class_ref, config.options, Sink, "sink"))


def _construct(reference: str, options: Mapping[str, Any], protocol: type, role: str) -> Any:
    cls = load_callable(reference, f"{role} class")
    try:
        instance = cls(**options)
    except TypeError as exc:
        raise PluginError(f"{role} class {reference!r} rejected its options: {exc}") from exc
    if not isinstance(instance, protocol):
        raise PluginError(
            f"{role} class {reference!r} does not implement the {protocol.__name__} protocol "
            "(open, read/write, ..., close): see the README's 'Extending' section"
        )
    return instance


def _check_offset(config: PythonSourceConfig, offset: Offset) -> None:
    """The class's optional `check_offset` (see `supervisor.protocols.Source`).

    A class that cannot be loaded checks nothing: the job cannot run until it is
    fixed, and the operator may set the offset first.
    """
    try:
        cls = load_reference(config.class_ref)
    except PluginError:
        return
    check = getattr(cls, "check_offset", None)
    if callable(check):
        check(offset)


def _references(config: PythonSourceConfig | PythonSinkConfig) -> Sequence[tuple[str, str]]:
    return [("class", config.class_ref)]


CONNECTOR = Connector(
    type="python",
    doc='A class of your own, class = "package.module:Name", built with the other keys.',
    source=SourceRole(
        config=PythonSourceConfig,
        build=_build_source,
        check_offset=_check_offset,
        references=_references,
    ),
    sink=SinkRole(config=PythonSinkConfig, build=_build_sink, references=_references),
)
