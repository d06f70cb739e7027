"""The kinds of value a connector's key can hold, for `setting(kind, doc)`.

Each is a converter factory from `supervisor.config.schema`, the same ones the
job file's other tables use, gathered here so a connector module reads
``kinds.path()`` (a field named ``path`` would otherwise shadow the function in
its class body). A converter is ``(raw TOML value, directory of the file) ->
value`` and raises `Invalid` with "expected ..., got ..." for anything else.
"""

from supervisor.config.schema import (
    Convert,
    Invalid,
    boolean,
    choice,
    describe,
    duration,
    exception_names,
    integer,
    number,
    path,
    text,
)
from supervisor.secrets import credential_name, environment_name, secret

__all__ = [
    "Convert",
    "Invalid",
    "boolean",
    "choice",
    "credential_name",
    "describe",
    "duration",
    "environment_name",
    "exception_names",
    "integer",
    "number",
    "path",
    "secret",
    "text",
]
