"""What a reload changes: a pure comparison of the running and the new configuration."""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.config.model import Config, JobConfig


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Jobs to start, to stop (their snapshots stay), and to take a new definition."""

    added: tuple[JobConfig, ...]
    removed: tuple[str, ...]
    changed: tuple[JobConfig, ...]
    daemon_changed: bool
    """`[supervisor]` settings differ: they take effect only at the next start."""

    def summary(self) -> dict[str, list[str]]:
        return {
            "added": [job.name for job in self.added],
            "removed": list(self.removed),
            "changed": [job.name for job in self.changed],
        }


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    old_jobs = {job.name: job for job in running.jobs}
    new_jobs = {job.name: job for job in new.jobs}
    return ReloadPlan(
        added=tuple(job for name, job in new_jobs.items() if name not in old_jobs),
        removed=tuple(name for name in old_jobs if name not in new_jobs),
        changed=tuple(
            job for name, job in new_jobs.items() if name in old_jobs and old_jobs[name] != job
        ),
        daemon_changed=running.daemon != new.daemon,
    )
