"""Loading third-party code named as ``"package.module:Name"``, and dotted names
(``json.JSONDecodeError``) as `retry_on` / `fatal_on` and `supervisor check` resolve them."""

from __future__ import annotations

import builtins
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
    target = _import(module_name, f"for {reference!r}")
    for attribute in attribute_path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            raise PluginError(
                f"module {module_name!r} has no attribute {attribute_path!r}"
            ) from None
    return target


def load_callable(reference: str, what: str) -> Any:
    """`load_reference`, and a `PluginError` unless the object can be called.

    `what` names its use (``"processor"``, ``"source class"``): a processor that is a
    string or a module is as unusable as one that cannot be imported, and as fatal.
    """
    target = load_reference(reference)
    if not callable(target):
        raise PluginError(
            f"{what} {reference!r} is not callable (it is {_a(type(target).__name__)})"
        )
    return target


def import_dotted(name: str) -> Any:
    """The object a dotted name like ``json.JSONDecodeError`` names, importing its module.

    The longest prefix that is a module is imported and the rest looked up in it;
    a bare name is a builtin. Raises `PluginError` saying what is missing.
    """
    parts = name.split(".")
    if len(parts) == 1:
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise PluginError(
            f"{name!r} is not a builtin name: write it with its module, 'pkg.mod.{name}'"
        )
    missing: str | None = None
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target = _import(module_name, f"for {name!r}", quiet_if_missing=True)
        except _Missing as exc:
            missing = missing or exc.module
            continue
        for attribute in parts[split:]:
            try:
                target = getattr(target, attribute)
            except AttributeError:
                raise PluginError(
                    f"module {module_name!r} has no attribute {'.'.join(parts[split:])!r}"
                ) from None
        return target
    raise PluginError(f"cannot import {name!r}: no module named {missing!r}")


class _Missing(Exception):
    """The module (or a package above it) does not exist."""

    def __init__(self, module: str) -> None:
        super().__init__(module)
        self.module = module


def _import(module_name: str, context: str, *, quiet_if_missing: bool = False) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module asked for (or its package) missing; one missing *inside* it is
        # a broken plugin, reported below.
        if quiet_if_missing and exc.name is not None and _is_prefix(exc.name, module_name):
            raise _Missing(exc.name) from None
        raise _cannot_import(module_name, context, exc) from exc
    except (Exception, SystemExit) as exc:  # a module's import code is plugin code
        raise _cannot_import(module_name, context, exc) from exc


def _cannot_import(module_name: str, context: str, exc: BaseException) -> PluginError:
    # Imported here, on the error path only: processor worker processes load their function
    # through this module, and `failures` would bring the snapshot's TOML code into each.
    from supervisor.failures import describe_error

    return PluginError(f"cannot import module {module_name!r} {context}: {describe_error(exc)}")


def _is_prefix(package: str, module_name: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
