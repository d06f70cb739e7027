"""The job file's schema as data, and checking one job file against it.

`[defaults]` from the daemon file are checked once on their own (partial: a
default may leave required keys to each job), then merged under every job
file, tables key by key, with what came from them marked `Inherited`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from supervisor.codec_choice import CODEC_NAMES, INSTALL_HINT, msgspec_installed
from supervisor.config import model
from supervisor.config.schema import (
    Convert,
    Field,
    Inherited,
    Invalid,
    Origin,
    Problem,
    boolean,
    check_table,
    choice,
    describe,
    duration,
    exception_names,
    integer,
    number,
    path,
    show_key,
    text,
    unknown_key,
    unwrap,
    workers,
)
from supervisor.connectors.registry import Registry, Role
from supervisor.errors import ConfigIssue, PluginError
from supervisor.plugins import REFERENCE_PATTERN

JOB_NAME_PATTERN = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z", re.ASCII)
"""A job name is also a file name in the state directory: nothing else gets through.

Anchored with ``\\A`` and ``\\Z`` (``$`` would allow a trailing newline), so
`match`, `search` and `fullmatch` all agree."""
JOB_NAME_RULE = (
    "a job name of 1 to 63 lowercase ASCII letters, digits, '_' or '-', starting with a letter "
    "or digit (^[a-z0-9][a-z0-9_-]{0,62}$)"
)


def codec_setting() -> Convert:
    """``codec``: one of `CODEC_NAMES`; "msgspec" only where msgspec can be imported."""
    choose = choice(*CODEC_NAMES)

    def convert(value: Any, base: Path) -> str:
        name: str = choose(value, base)
        if name == "msgspec" and not msgspec_installed():
            raise Invalid(
                'codec = "msgspec" needs msgspec, which is not installed: '
                f'{INSTALL_HINT}, or set codec = "auto" (msgspec when installed) or "json"'
            )
        return name

    return convert


_REFERENCE = text(REFERENCE_PATTERN, 'a reference like "package.module:Name"')
_ROLES: tuple[Role, ...] = ("source", "sink")
_POLICIES: dict[str, dict[str, Field]] = {
    "processor": {
        "function": Field(_REFERENCE),
        "batch_function": Field(_REFERENCE),
        "workers": Field(workers()),
    },
    "checkpoint": {"every_records": Field(integer(1)), "interval": Field(duration(positive=True))},
    "retry": {
        "initial": Field(duration(positive=True)),
        "max": Field(duration(positive=True)),
        "multiplier": Field(number(1)),
        "jitter": Field(boolean()),
        "max_attempts": Field(integer(0)),
        "reset_after": Field(duration()),
        "retry_on": Field(exception_names()),
        "fatal_on": Field(exception_names()),
    },
    "records": {
        "on_error": Field(choice("fail", "skip", "dead_letter")),
        "dead_letter": Field(path()),
        "max_errors": Field(integer(0)),
    },
}
_JOB_SCALARS = {
    "name": Field(text(JOB_NAME_PATTERN, JOB_NAME_RULE)),
    "enabled": Field(boolean()),
    "suspend_on_failure": Field(boolean()),
    "codec": Field(codec_setting()),
}
_JOB_KEYS = {*_JOB_SCALARS, "source", "sink", *_POLICIES}
_DEFAULT_RETRY = model.RetryPolicy()
# Frozen, so one shared instance serves every job that leaves a policy unset.
_DEFAULT_CHECKPOINT = model.CheckpointPolicy()
_DEFAULT_RECORDS = model.RecordsPolicy()
_Policy = TypeVar("_Policy", model.CheckpointPolicy, model.RetryPolicy, model.RecordsPolicy)


# --- defaults ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Defaults:
    """The daemon file's ``[defaults]``, and the problems already reported in them."""

    file: Path
    table: dict[str, Any]
    reported: frozenset[tuple[str, str]]
    directory: Path
    """``file.parent``, worked out once rather than for every job file."""
    connectors: Registry
    """Where ``[source]`` and ``[sink]`` types are looked up."""


def check_defaults(
    file: Path, raw: Any, issues: list[ConfigIssue], connectors: Registry
) -> Defaults:
    """Check the daemon file's `[defaults]` alone; each problem is reported once, here."""
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        problems.append(Problem("", f"expected a table of job keys, got {describe(raw)}"))
        raw = {}
    if "name" in raw:
        problems.append(Problem("name", "expected no name here: a name belongs to one job file"))
    table = {key: value for key, value in raw.items() if key != "name"}
    origin = Origin(file.parent, file.parent)
    _check_job(
        {key: Inherited(value) for key, value in table.items()},
        origin,
        problems,
        connectors,
        partial=True,
    )
    for problem in problems:
        issues.append(
            ConfigIssue(str(file), f"defaults.{problem.key}".rstrip("."), problem.message)
        )
    reported = frozenset((p.key, p.message) for p in problems)
    return Defaults(file, table, reported, origin.defaults_dir, connectors)


# --- job files ---------------------------------------------------------------------------


def check_job_file(
    file: Path, document: dict[str, Any], defaults: Defaults, issues: list[ConfigIssue]
) -> tuple[str | None, model.JobConfig | None]:
    """The job's name (None when unusable) and the job (None when anything is wrong)."""
    problems: list[Problem] = []
    merged = _merge(defaults.table, document) if defaults.table else dict(document)
    parts = _check_job(
        merged, Origin(file.parent, defaults.directory), problems, defaults.connectors
    )
    if "name" in document:
        name = parts.get("name")
    else:
        name = file.stem
        if not JOB_NAME_PATTERN.match(name):
            found = f"the file name makes the job name {name!r}"
            name = None
            problems.append(
                Problem("name", f"expected {JOB_NAME_RULE}; {found}: rename the file or set name")
            )
    for problem in problems:
        # A bad default is reported once, against the daemon file; a default that
        # only fails in this job (a key of another source type) is reported here.
        if problem.inherited and (problem.key, problem.message) in defaults.reported:
            continue
        note = f" (the value is from [defaults] in {defaults.file})" if problem.inherited else ""
        issues.append(ConfigIssue(str(file), problem.key, problem.message + note))
    if problems or name is None:
        return name, None
    return name, model.JobConfig(
        name=name,
        path=file,
        source=parts["source"],
        sink=parts["sink"],
        processor=model.ProcessorConfig(**parts["processor"]) if "processor" in parts else None,
        checkpoint=_policy(model.CheckpointPolicy, parts.get("checkpoint"), _DEFAULT_CHECKPOINT),
        retry=_policy(model.RetryPolicy, parts.get("retry"), _DEFAULT_RETRY),
        records=_policy(model.RecordsPolicy, parts.get("records"), _DEFAULT_RECORDS),
        **{key: parts[key] for key in ("enabled", "suspend_on_failure", "codec") if key in parts},
    )


def _policy(
    build: Callable[..., _Policy], values: dict[str, Any] | None, default: _Policy
) -> _Policy:
    """The policy `values` set, or the shared default when they set nothing."""
    return build(**values) if values else default


def _check_job(
    raw: dict[str, Any],
    origin: Origin,
    problems: list[Problem],
    connectors: Registry,
    *,
    partial: bool = False,
) -> dict[str, Any]:
    """Every key of one (merged) job table, converted; `partial` for `[defaults]` alone."""
    scalars: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _JOB_SCALARS:
            scalars[key] = value
        elif key not in _JOB_KEYS:
            message = unknown_key(key, _JOB_KEYS)
            problems.append(Problem(show_key(key), message, isinstance(value, Inherited)))
    parts = check_table(scalars, _JOB_SCALARS, "", origin, problems)
    for role in _ROLES:
        if role in raw:
            parts[role] = _typed_table(
                raw[role], role, connectors, origin, problems, partial=partial
            )
        elif not partial:
            problems.append(Problem(role, f"required table [{role}] is missing"))
    if "processor" in raw and _typed(raw["processor"]):
        typed = _typed_table(
            raw["processor"], "processor", connectors, origin, problems, partial=partial
        )
        parts["processor"] = {"connector": typed}
    for key, fields in _POLICIES.items():
        if key in raw and key not in parts:
            parts[key] = check_table(raw[key], fields, f"{key}.", origin, problems, partial=partial)
    _cross_checks(raw, parts, problems, partial=partial)
    if not partial:
        _connector_checks(raw, parts, problems, connectors)
    return parts


def _connector_checks(
    raw: dict[str, Any], parts: dict[str, Any], problems: list[Problem], connectors: Registry
) -> None:
    """What each connector says of its keys against the job's ``[checkpoint]`` policy;
    only once both converted cleanly (a problem there is reported already)."""
    if any(problem.key.startswith("checkpoint.") for problem in problems):
        return
    checkpoint = _policy(model.CheckpointPolicy, parts.get("checkpoint"), _DEFAULT_CHECKPOINT)
    processor = parts.get("processor", {}).get("connector")
    for role in (*_ROLES, "processor"):
        table = unwrap(raw.get(role))
        config = processor if role == "processor" else parts.get(role)
        if config is None or any(problem.key.startswith(f"{role}.") for problem in problems):
            continue
        kind = unwrap(table.get("type")) if isinstance(table, dict) else None
        part = connectors.role(kind, role) if isinstance(kind, str) else None
        if part is None or part.check_job is None:
            continue
        for key, message in part.check_job(config, checkpoint):
            problems.append(Problem(f"{role}.{key}", message))


def _typed_table(
    raw: Any,
    role: Role,
    connectors: Registry,
    origin: Origin,
    problems: list[Problem],
    *,
    partial: bool,
) -> Any:
    """A ``[source]`` or ``[sink]``: its ``type`` picks the connector, whose config
    dataclass declares the other keys; None if anything is wrong."""
    inherited = isinstance(raw, Inherited)
    table = unwrap(raw) if inherited else raw
    if not isinstance(table, dict):
        problems.append(Problem(role, f"expected a table, got {describe(table)}", inherited))
        return None
    kind = unwrap(table.get("type"))
    if kind is None and partial:
        return None  # a default [source] may leave the type to each job
    part, unusable = None, ""
    try:
        part = connectors.role(kind, role) if isinstance(kind, str) else None
    except PluginError as exc:
        unusable = str(exc)  # registered, but its module or declaration is broken
    if part is None:
        message = unusable or _unknown_type(kind, role, connectors)
        from_defaults = inherited or isinstance(table.get("type"), Inherited)
        problems.append(Problem(f"{role}.type", message, from_defaults))
        return None
    rest = {key: value for key, value in table.items() if key != "type"}
    before = len(problems)
    settings = part.settings
    values = check_table(
        Inherited(rest) if inherited else rest,
        settings.fields,
        f"{role}.",
        origin,
        problems,
        extra=settings.other is not None,  # e.g. a plugin's options, passed on untouched
        partial=partial,
    )
    if len(problems) > before or partial:
        return None
    return settings.build(values)


def _typed(raw: Any) -> bool:
    """A ``[processor]`` table that names a ``type``: a connector's, not a function."""
    table = unwrap(raw)
    return isinstance(table, dict) and "type" in table


def _unknown_type(kind: Any, role: Role, connectors: Registry) -> str:
    listed = ", ".join(f'"{name}"' for name in connectors.types(role))
    expected = f"one of {listed}" if listed else "a registered connector type (none is)"
    found = "nothing (required key is missing)" if kind is None else describe(kind)
    problem = f"; {connectors.problem}" if connectors.problem is not None else ""
    return f"expected {expected}, got {found}{problem}"


def _cross_checks(
    raw: dict[str, Any], parts: dict[str, Any], problems: list[Problem], *, partial: bool
) -> None:
    retry: dict[str, Any] = parts.get("retry", {})
    retry_converted = not any(problem.key.startswith("retry.") for problem in problems)
    if retry_converted and (not partial or {"initial", "max"} <= retry.keys()):
        initial = retry.get("initial", _DEFAULT_RETRY.initial)
        maximum = retry.get("max", _DEFAULT_RETRY.max)
        if maximum < initial:
            unset = "" if "max" in retry else " (the default)"
            message = f"expected at least retry.initial ({initial:g}s), got {maximum:g}s{unset}"
            inherited = all(_inherited(raw.get("retry"), key) for key in ("initial", "max"))
            problems.append(Problem("retry.max", message, inherited))
    _processor_checks(raw, parts, problems, partial=partial)
    records: dict[str, Any] = parts.get("records", {})
    if not partial and records.get("on_error") == "dead_letter" and "dead_letter" not in records:
        message = 'expected a file path, required when records.on_error = "dead_letter"'
        problems.append(Problem("records.dead_letter", message))


def _processor_checks(
    raw: dict[str, Any], parts: dict[str, Any], problems: list[Problem], *, partial: bool
) -> None:
    """A ``[processor]`` without a ``type`` names exactly one function."""
    processor: dict[str, Any] | None = parts.get("processor")
    if processor is None or "connector" in processor:
        return
    section = raw.get("processor")
    if "function" in processor and "batch_function" in processor:
        message = (
            "expected either processor.function (called per record) or "
            "processor.batch_function (called per batch), not both"
        )
        inherited = _inherited(section, "batch_function")
        problems.append(Problem("processor.batch_function", message, inherited))
    elif not partial and not {"function", "batch_function"} & processor.keys():
        table = unwrap(section)
        if isinstance(table, dict) and {"function", "batch_function"} & table.keys():
            return  # set, but wrong: reported already
        message = "required key is missing (or processor.batch_function)"
        problems.append(Problem("processor.function", message))


def _inherited(section: Any, key: str) -> bool:
    """Whether `key` of a merged table was set by `[defaults]` alone."""
    if isinstance(section, Inherited):
        return isinstance(section.value, dict) and key in section.value
    return isinstance(section, dict) and isinstance(section.get(key), Inherited)


def _merge(defaults: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """`job` over `defaults`, tables key by key; what only `defaults` set is `Inherited`."""
    merged: dict[str, Any] = {key: Inherited(value) for key, value in defaults.items()}
    for key, value in job.items():
        base = defaults.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and _same_kind(base, value):
            merged[key] = _merge(base, value)
        else:
            merged[key] = value
    return merged


def _same_kind(base: dict[str, Any], value: dict[str, Any]) -> bool:
    # A job's [source] of another type than the default one replaces it whole.
    return "type" not in value or base.get("type", value["type"]) == value["type"]
