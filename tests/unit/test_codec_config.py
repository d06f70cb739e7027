"""The job's ``codec`` key: its values, its default, and msgspec missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import codec_choice
from supervisor.codec import JSON
from supervisor.config import job_schema
from supervisor.config.loader import load_config
from supervisor.errors import ConfigError

JOB = '[source]\ntype = "generate"\n[sink]\ntype = "null"\n'


def _write(root: Path, job: str, defaults: str = "") -> Path:
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "supervisor.toml").write_text(f"[defaults]\n{defaults}\n" if defaults else "")
    (root / "jobs" / "a.toml").write_text(job)
    return root / "supervisor.toml"


def _issues(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ={})
    return [str(issue) for issue in raised.value.issues]


@pytest.mark.parametrize("name", ["auto", "msgspec", "json"])
def test_each_codec_is_a_job_setting(tmp_path: Path, name: str) -> None:
    """codec = "auto" | "msgspec" | "json" lands in JobConfig.codec."""
    pytest.importorskip("msgspec")
    (job,) = load_config(_write(tmp_path, f'codec = "{name}"\n' + JOB), environ={}).jobs
    assert job.codec == name


def test_the_codec_defaults_to_auto_and_may_come_from_defaults(tmp_path: Path) -> None:
    """Unset, a job's codec is "auto"; [defaults] may set it for every job."""
    (job,) = load_config(_write(tmp_path, JOB), environ={}).jobs
    assert job.codec == "auto"
    (job,) = load_config(_write(tmp_path, JOB, 'codec = "json"'), environ={}).jobs
    assert job.codec == "json"


def test_an_unknown_codec_names_the_file_key_and_choices(tmp_path: Path) -> None:
    """codec = "orjson" is refused, naming the job file, the key and the three values."""
    (issue,) = _issues(_write(tmp_path, 'codec = "orjson"\n' + JOB))
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: codec: ")
    assert 'expected one of "auto", "msgspec", "json", got a string (\'orjson\')' in issue


def test_msgspec_without_msgspec_is_a_config_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """codec = "msgspec" where msgspec cannot be imported names the file, the key and the
    extra to install; "auto" then quietly means json."""
    monkeypatch.setattr(job_schema, "msgspec_installed", lambda: False)
    monkeypatch.setattr(codec_choice, "msgspec_installed", lambda: False)
    (issue,) = _issues(_write(tmp_path, 'codec = "msgspec"\n' + JOB))
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: codec: ")
    assert "pip install 'stream-supervisor[fast]'" in issue
    (job,) = load_config(_write(tmp_path, JOB), environ={}).jobs
    assert codec_choice.codec_for(job.codec) is JSON


def test_the_install_hint_names_this_distribution_and_its_extra() -> None:
    """The hint's distribution and extra are the ones pyproject.toml declares."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert f"pip install '{project['name']}[fast]'" == codec_choice.INSTALL_HINT
    assert any(dep.startswith("msgspec") for dep in project["optional-dependencies"]["fast"])
