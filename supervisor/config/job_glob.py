"""The `jobs` glob, expanded as a shell would, but bounded.

`glob.glob(recursive=True)` follows symlinked directories under ``**``: two
links back to their own directory (``a -> .``, ``b -> .``) make it walk 2**40
paths, and `supervisor check` (or a reload) hangs. Here ``**`` never enters a
symlinked directory (as `find` without ``-L``, and pathlib's default since
Python 3.13), and a glob visits at most `MAX_ENTRIES` directory entries (a
``/**/*.toml`` over the whole disk is refused, not walked). A single ``*``
still goes through a symlinked directory: it cannot loop, the pattern has only
so many parts. Otherwise the matches are `glob.glob`'s: dot files are skipped
unless the part starts with a dot, and matching is case-sensitive.
"""

from __future__ import annotations

import fnmatch
import glob
import os

MAX_ENTRIES = 100_000
"""Directory entries one expansion may look at: far more than any jobs directory holds."""


class GlobTooWide(ValueError):
    """The glob visits more directory entries than `MAX_ENTRIES`."""


def expand(pattern: str, root: str) -> list[str]:
    """The paths `pattern` matches, relative to the directory `root` unless absolute.

    Absolute paths when `root` is (each joined, not normalised); GlobTooWide past
    `MAX_ENTRIES` entries. A directory that cannot be listed matches nothing.
    """
    parts = [part for part in pattern.split("/") if part]
    budget = _Budget(pattern)
    found = ["/" if pattern.startswith("/") else root]
    for index, part in enumerate(parts):
        directories_only = index < len(parts) - 1
        matches: list[str] = []
        for directory in found:
            if part == "**":
                below = _everything_below(directory, budget, directories_only)
                # As glob: a leading ** that is the whole pattern does not match the root.
                matches.extend(below[1:] if parts == ["**"] else below)
            elif glob.has_magic(part):
                matches.extend(_matching(directory, part, budget, directories_only))
            else:
                path = os.path.join(directory, part)  # noqa: PTH118 - strings, as glob does
                if os.path.isdir(path) if directories_only else os.path.lexists(path):  # noqa: PTH112
                    matches.append(path)
        found = list(dict.fromkeys(matches))
    return found if parts else []


class _Budget:
    __slots__ = ("left", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.left = MAX_ENTRIES

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise GlobTooWide(
                f"the glob {self.pattern!r} visits more than {MAX_ENTRIES} directory entries: "
                "narrow it (e.g. jobs/*.toml)"
            )


def _entries(directory: str, budget: _Budget) -> list[os.DirEntry[str]]:
    """The entries of `directory` that are not dot files; none if it cannot be listed."""
    entries = []
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                budget.spend()
                if not entry.name.startswith("."):
                    entries.append(entry)
    except OSError:  # not a directory, gone, no permission: matches nothing, as in glob
        pass
    return entries


def _matching(directory: str, part: str, budget: _Budget, directories_only: bool) -> list[str]:
    """Entries of `directory` whose name matches `part` (a dot file only if `part` has one)."""
    if part.startswith("."):
        names = _dot_names(directory, budget)
    else:
        names = [entry.name for entry in _entries(directory, budget)]
    return [
        os.path.join(directory, name)  # noqa: PTH118
        for name in fnmatch.filter(names, part)
        if not directories_only or os.path.isdir(os.path.join(directory, name))  # noqa: PTH118, PTH112
    ]


def _dot_names(directory: str, budget: _Budget) -> list[str]:
    try:
        with os.scandir(directory) as scan:
            names = []
            for entry in scan:
                budget.spend()
                names.append(entry.name)
            return names
    except OSError:
        return []


def _everything_below(directory: str, budget: _Budget, directories_only: bool) -> list[str]:
    """`directory` and what is below it, depth first, never through a symlinked directory
    (only directories if `directories_only`), as ``**`` matches."""
    found = [directory]
    pending = [directory]
    while pending:
        below = []
        for entry in _entries(pending.pop(), budget):
            is_directory = entry.is_dir(follow_symlinks=False)
            if is_directory:
                below.append(entry.path)
            if is_directory or not directories_only:
                found.append(entry.path)
        pending.extend(reversed(below))
    return found
