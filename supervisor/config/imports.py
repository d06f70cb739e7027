"""What `supervisor check` adds to loading: importing what job files name.

Plugin references (``[processor] function``, and what a connector says its
config names, like the ``class`` of a ``python`` source or sink) must import and
be callable; `retry_on` / `fatal_on` names must import
and be exception classes. Only imports run: no plugin is constructed or called.
The daemon's own loading (`run`, `reload`) does not import: a plugin that cannot
be loaded fails its job only, and a name that cannot be imported falls back to
matching the name an exception class was defined under.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervisor.config import model
from supervisor.config.job_schema import Defaults
from supervisor.connectors.registry import sink_role, source_role
from supervisor.errors import ConfigIssue, PluginError
from supervisor.plugins import import_dotted, load_callable


@dataclass
class ImportCheck:
    """Checks the imports of every job of one load; each result and report is made once."""

    defaults: Defaults
    issues: list[ConfigIssue]
    _results: dict[tuple[str, str], str | None] = field(default_factory=dict)
    _reported: set[tuple[str, str]] = field(default_factory=set)

    def check(self, job: model.JobConfig, document: dict[str, Any]) -> None:
        """Report what `job` (read from `document`, the job file's TOML) names and cannot use."""
        parts = (
            ("source", job.source, source_role(job.source)),
            ("sink", job.sink, sink_role(job.sink)),
        )
        for role, config, part in parts:
            references = part.references(config) if part.references is not None else ()
            for key, reference in references:
                problem = self._plugin(reference, f"{role} {key}")
                self._report(job, document, role, key, problem)
        if job.processor is not None:
            for key in ("function", "batch_function"):
                reference = getattr(job.processor, key)
                if reference is not None:
                    what = "processor" if key == "function" else key
                    self._report(job, document, "processor", key, self._plugin(reference, what))
        for key in ("retry_on", "fatal_on"):
            for name in getattr(job.retry, key):
                self._report(job, document, "retry", key, self._exception(name))

    def _plugin(self, reference: str, what: str) -> str | None:
        if (reference, what) not in self._results:
            try:
                load_callable(reference, what)
                self._results[(reference, what)] = None
            except PluginError as exc:
                self._results[(reference, what)] = str(exc)
        return self._results[(reference, what)]

    def _exception(self, name: str) -> str | None:
        if (name, "exception") not in self._results:
            self._results[(name, "exception")] = _exception_problem(name)
        return self._results[(name, "exception")]

    def _report(
        self,
        job: model.JobConfig,
        document: dict[str, Any],
        table: str,
        key: str,
        problem: str | None,
    ) -> None:
        if problem is None:
            return
        own = document.get(table)
        if isinstance(own, dict) and key in own:
            self.issues.append(ConfigIssue(str(job.path), f"{table}.{key}", problem))
            return
        # Set by [defaults]: reported once, against the daemon file.
        where = f"defaults.{table}.{key}"
        if (where, problem) not in self._reported:
            self._reported.add((where, problem))
            self.issues.append(ConfigIssue(str(self.defaults.file), where, problem))


def _exception_problem(name: str) -> str | None:
    try:
        target = import_dotted(name)
    except PluginError as exc:
        return f"expected an exception class that can be imported: {exc}"
    if not (isinstance(target, type) and issubclass(target, BaseException)):
        return f"expected an exception class, but {name!r} is {_kind(target)}"
    return None


def _kind(target: object) -> str:
    kind = type(target).__name__
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
