"""The connector registry: a connector is one module plus one entry point.

A toy connector declared in this module is registered in-process (a `Registry`
given its `Registration`s, as entry points would give them) and checked
through the real loader: its keys are checked as strictly as a built-in's.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisor.components import build_sink, build_source, check_source_offset
from supervisor.config.loader import load_config
from supervisor.config.model import Config, JobConfig
from supervisor.connectors import Connector, SinkRole, SourceRole, kinds, other_keys, setting
from supervisor.connectors.generate import GenerateSourceConfig
from supervisor.connectors.registry import (
    DISTRIBUTION,
    GROUP,
    Registration,
    Registry,
    connector_for,
    installed,
)
from supervisor.connectors.settings import Settings
from supervisor.errors import ConfigError, PluginError
from supervisor.protocols import Batch, Offset, Record
from supervisor.testing import RecordingSink

BUILT_IN = {"file", "generate", "jsonl", "sqlite", "stdout", "null", "python", "nats"}


# --- a toy connector, declared as a third-party module would ----------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ToyConfig:
    label: str = field(metadata=setting(kinds.text(re.compile(r"\w+"), "a word"), "A word."))
    count: int = field(default=3, metadata=setting(kinds.integer(1), "Records in all."))
    data: Path | None = field(default=None, metadata=setting(kinds.path(), "A file."))


class ToySource:
    def __init__(self, config: ToyConfig) -> None:
        self.config = config
        self._next = 0

    async def open(self, offset: Offset | None) -> None:
        self._next = offset if isinstance(offset, int) else 0

    async def read(self, max_records: int, wait: float) -> Batch:
        stop = min(self._next + max_records, self.config.count)
        records = [{"label": self.config.label, "n": n} for n in range(self._next, stop)]
        self._next = stop
        return Batch(records, stop, end=stop >= self.config.count)

    async def close(self) -> None:
        return None


def _check_toy_offset(config: ToyConfig, offset: Offset) -> None:
    if not isinstance(offset, int):
        raise ValueError(f"a toy offset is an integer, got {offset!r}")


TOY = Connector(
    type="toy",
    doc="Counts, for tests.",
    source=SourceRole(
        config=ToyConfig,
        build=lambda config, job: ToySource(config),
        check_offset=_check_toy_offset,
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToySinkConfig:
    target: str = field(metadata=setting(kinds.text(re.compile(r".+"), "anything"), "A name."))
    extra: dict[str, Any] = field(default_factory=dict, metadata=other_keys("Options."))


def _toy_references(config: ToySinkConfig) -> Sequence[tuple[str, str]]:
    return [("target", config.target)]


TOY_SINK = Connector(
    type="toy-sink",
    doc="Records what it is given.",
    sink=SinkRole(
        config=ToySinkConfig,
        build=lambda config, job: RecordingSink(),
        references=_toy_references,
    ),
)
NOT_A_CONNECTOR = "a string"
WRONG_TYPE = dataclasses.replace(TOY, type="other")
COPY = dataclasses.replace(TOY, type="copy")


def _registry(*extra: Registration) -> Registry:
    """The installed connectors, plus `extra` as if another distribution registered them."""
    return Registry([*installed().registrations, *extra])


def _toy(name: str = "toy", reference: str = "tests.unit.test_connectors:TOY") -> Registration:
    return Registration(name, reference, "toy-connectors", "1.0")


def _write(root: Path, jobs: dict[str, str], daemon: str = "") -> Path:
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "supervisor.toml").write_text(textwrap.dedent(daemon))
    for name, body in jobs.items():
        (root / "jobs" / f"{name}.toml").write_text(textwrap.dedent(body))
    return root / "supervisor.toml"


def _load(config: Path, registry: Registry, *, import_plugins: bool = False) -> Config:
    return load_config(config, environ={}, connectors=registry, import_plugins=import_plugins)


def _issues(config: Path, registry: Registry, *, import_plugins: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        _load(config, registry, import_plugins=import_plugins)
    return [str(issue) for issue in raised.value.issues]


# --- the installed registry ---------------------------------------------------------------


def test_the_built_in_connectors_are_entry_points_of_this_distribution() -> None:
    """Each built-in type is an entry point of stream-supervisor, named by its type."""
    ours = [
        entry
        for entry in importlib.metadata.entry_points(group=GROUP)
        if entry.dist is not None and entry.dist.name == DISTRIBUTION
    ]
    assert {entry.name for entry in ours} == BUILT_IN
    for entry in ours:
        connector = entry.load()
        assert isinstance(connector, Connector)
        assert connector.type == entry.name
    assert installed().problem is None
    assert installed() is installed()  # discovered once per process


def test_each_role_lists_only_the_types_that_play_it() -> None:
    registry = _registry(_toy(), _toy("toy-sink", "tests.unit.test_connectors:TOY_SINK"))
    assert registry.types("source") == ["file", "generate", "nats", "python", "toy"]
    assert registry.types("sink") == [
        "jsonl",
        "nats",
        "null",
        "python",
        "sqlite",
        "stdout",
        "toy-sink",
    ]


def test_a_config_built_in_code_finds_its_connector() -> None:
    """A config a test builds (no loader ran) still finds the connector declaring it."""
    assert connector_for(GenerateSourceConfig()).type == "generate"


# --- a toy connector through the loader -----------------------------------------------------


def test_a_toy_connector_is_checked_built_and_run(tmp_path: Path) -> None:
    """One module plus one registration: the loader converts its keys, the builders build it."""
    config = _write(
        tmp_path,
        {
            "a": """
                [source]
                type = "toy"
                label = "hello"
                count = 2
                data = "in.txt"
                [sink]
                type = "toy-sink"
                target = "json:dumps"
                anything = { goes = [1] }
            """
        },
    )
    registry = _registry(_toy(), _toy("toy-sink", "tests.unit.test_connectors:TOY_SINK"))
    (job,) = _load(config, registry, import_plugins=True).jobs
    assert job.source == ToyConfig(label="hello", count=2, data=tmp_path / "jobs" / "in.txt")
    assert job.sink == ToySinkConfig(target="json:dumps", extra={"anything": {"goes": [1]}})
    assert isinstance(build_sink(job), RecordingSink)
    assert _read_all(job) == [{"label": "hello", "n": 0}, {"label": "hello", "n": 1}]
    check_source_offset(job, 5)
    with pytest.raises(ValueError, match="a toy offset is an integer"):
        check_source_offset(job, "five")


def _read_all(job: JobConfig) -> list[Record]:
    async def main() -> list[Record]:
        source = build_source(job)
        await source.open(None)
        batch = await source.read(10, 0)
        await source.close()
        assert batch.end
        return list(batch.records)

    return anyio.run(main)


def test_a_toy_connector_keys_are_checked_strictly(tmp_path: Path) -> None:
    """Unknown key with a did-you-mean, missing required key, wrong kind; the type listed."""
    config = _write(
        tmp_path,
        {
            "a": '[source]\ntype = "toy"\nlabel = "x"\ncout = 2\n[sink]\ntype = "null"\n',
            "b": '[source]\ntype = "toy"\ncount = 0\n[sink]\ntype = "null"\n',
            "c": '[source]\ntype = "toys"\n[sink]\ntype = "toy"\n',
        },
    )
    a, b, c = (f"{tmp_path}/jobs/{name}.toml" for name in "abc")
    assert set(_issues(config, _registry(_toy()))) == {
        f'{a}: source.cout: unknown key "cout"; did you mean "count"?',
        f"{b}: source.count: expected an integer of at least 1, got an integer (0)",
        f"{b}: source.label: required key is missing",
        f'{c}: source.type: expected one of "file", "generate", "nats", "python", "toy", '
        "got a string ('toys')",
        f'{c}: sink.type: expected one of "jsonl", "nats", "null", "python", "sqlite", "stdout", '
        "got a string ('toy')",
    }


def test_check_imports_what_a_connector_says_its_config_names(tmp_path: Path) -> None:
    """`supervisor check` imports each (key, reference) a connector declares, like `class`."""
    config = _write(
        tmp_path,
        {"a": '[source]\ntype = "generate"\n[sink]\ntype = "toy-sink"\ntarget = "no_such:x"\n'},
    )
    registry = _registry(_toy("toy-sink", "tests.unit.test_connectors:TOY_SINK"))
    _load(config, registry)  # the daemon's own loading imports nothing
    (issue,) = _issues(config, registry, import_plugins=True)
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: sink.target: cannot import module 'no_such'")


def test_a_default_of_a_toy_type_is_reported_once_in_the_daemon_file(tmp_path: Path) -> None:
    """[defaults] problems of a connector's keys are reported against the daemon file, once."""
    config = _write(
        tmp_path,
        {"a": '[sink]\ntype = "null"\n', "b": '[sink]\ntype = "null"\n'},
        daemon='[defaults.source]\ntype = "toy"\nlabel = "x"\ncuont = 1\n',
    )
    assert _issues(config, _registry(_toy())) == [
        f'{tmp_path}/supervisor.toml: defaults.source.cuont: unknown key "cuont"; '
        'did you mean "count"?'
    ]


# --- connectors that cannot be used -------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            "no_such_module:CONNECTOR",
            'connector "toy" from no_such_module:CONNECTOR (distribution "toy-connectors" 1.0) '
            "cannot be loaded: cannot import module 'no_such_module'",
        ),
        ("tests.unit.test_connectors:NOT_A_CONNECTOR", "is 'str', not a Connector"),
        ("tests.unit.test_connectors:WRONG_TYPE", 'declares type "other" instead'),
    ],
)
def test_a_connector_that_cannot_be_loaded_fails_only_its_jobs(
    tmp_path: Path, reference: str, expected: str
) -> None:
    """A broken connector is a config issue naming the type, distribution and error."""
    config = _write(
        tmp_path,
        {
            "a": '[source]\ntype = "toy"\nlabel = "x"\n[sink]\ntype = "null"\n',
            "b": '[source]\ntype = "generate"\n[sink]\ntype = "null"\n',
        },
    )
    registry = _registry(_toy(reference=reference))
    (issue,) = _issues(config, registry)
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: source.type: ")
    assert expected in issue
    assert "toy" not in registry.types("source")


def test_a_type_registered_by_two_distributions_is_used_by_neither(tmp_path: Path) -> None:
    """Neither registration wins (that would depend on sys.path): the jobs say why."""
    config = _write(tmp_path, {"a": '[source]\ntype = "toy"\nlabel = "x"\n[sink]\ntype = "null"\n'})
    other = Registration("toy", "tests.unit.test_connectors:TOY", "other-dist", "2.0")
    (issue,) = _issues(config, _registry(_toy(), other))
    assert issue == (
        f'{tmp_path}/jobs/a.toml: source.type: connector type "toy" is registered more than '
        'once: tests.unit.test_connectors:TOY (distribution "toy-connectors" 1.0); '
        'tests.unit.test_connectors:TOY (distribution "other-dist" 2.0); uninstall all but one'
    )


def test_a_built_in_type_registered_again_is_refused_too(tmp_path: Path) -> None:
    config = _write(tmp_path, {"a": '[source]\ntype = "file"\npath = "x"\n[sink]\ntype = "null"\n'})
    (issue,) = _issues(config, _registry(_toy("file")))
    assert 'connector type "file" is registered more than once' in issue
    assert f'(distribution "{DISTRIBUTION}"' in issue


def test_a_config_class_belongs_to_one_connector() -> None:
    """Configs find their connector by class, so two connectors may not share one."""
    _registry(_toy()).get("toy")
    with pytest.raises(PluginError, match='ToyConfig, the config class of connector "toy"'):
        _registry(_toy("copy", "tests.unit.test_connectors:COPY")).get("copy")


def test_without_this_package_installed_the_message_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No metadata: no connector at all, and the job says why instead of listing nothing."""

    def missing(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    registry = Registry.discover()
    config = _write(tmp_path, {"a": '[source]\ntype = "file"\npath = "x"\n[sink]\ntype = "null"\n'})
    issues = _issues(config, registry)
    assert issues[0] == (
        f"{tmp_path}/jobs/a.toml: source.type: expected a registered connector type (none is), "
        f"got a string ('file'); the {DISTRIBUTION} package is not installed, so no connector "
        "is registered (even its own are entry points of the installed package): install it, "
        "e.g. pip install -e ."
    )


def test_stale_metadata_without_entry_points_says_reinstall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    problem = Registry.discover().problem
    assert problem is not None
    assert "registers no connectors" in problem
    assert "reinstall it" in problem


# --- declarations ---------------------------------------------------------------------------


def test_keys_are_read_off_the_config_dataclass() -> None:
    settings = Settings.of(ToyConfig)
    assert list(settings.fields) == ["label", "count", "data"]
    assert [(key.name, key.required, key.default) for key in settings.keys] == [
        ("label", True, dataclasses.MISSING),
        ("count", False, 3),
        ("data", False, None),
    ]
    python_source = installed().get("python").source
    assert python_source is not None
    python = python_source.settings
    assert list(python.fields) == ["class"]
    assert python.renamed == {"class": "class_ref"}
    assert python.other == "options"


def test_a_field_without_a_declared_key_is_refused() -> None:
    @dataclass(frozen=True)
    class Undeclared:
        path: str

    with pytest.raises(TypeError, match=r"field 'path' of .*Undeclared declares no key"):
        SinkRole(config=Undeclared, build=lambda config, job: RecordingSink())


def test_a_connector_declares_a_valid_type_and_a_role() -> None:
    with pytest.raises(ValueError, match="must match"):
        Connector(type="Bad Type", doc="", sink=TOY_SINK.sink)
    with pytest.raises(ValueError, match="neither a source nor a sink"):
        Connector(type="empty", doc="")
