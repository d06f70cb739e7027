"""Loading third-party code named as ``"package.module:Name"``."""

from __future__ import annotations

import importlib
import re
from typing import Any

from supervisor.errors import PluginError

REFERENCE_PATTERN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
)


def load_reference(reference: str) -> Any:
    """Import ``package.module:Name`` (``Name`` may be dotted) and return the object."""
    if not REFERENCE_PATTERN.fullmatch(reference):
        raise PluginError(f"{reference!r} is not a reference like 'package.module:Name'")
    module_name, _, attribute_path = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(
            f"cannot import module {module_name!r} for {reference!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for attribute in attribute_path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            raise PluginError(
                f"module {module_name!r} has no attribute {attribute_path!r}"
            ) from None
    return target
