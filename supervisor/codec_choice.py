"""Which codec a job uses: its ``codec`` key, and whether msgspec is installed.

Apart from `supervisor.codec` so that the msgspec codec, which builds on it, is
imported only here, and only by a job that uses it.
"""

from __future__ import annotations

import importlib.util
from typing import Final, get_args

from supervisor.codec import JSON, Codec
from supervisor.config.model import CodecName

CODEC_NAMES: Final[tuple[str, ...]] = get_args(CodecName)
INSTALL_HINT: Final = "pip install 'stream-supervisor[fast]'"

_msgspec: Codec | None = None


def msgspec_installed() -> bool:
    """Whether the ``[fast]`` extra's msgspec can be imported (without importing it)."""
    return importlib.util.find_spec("msgspec") is not None


def codec_for(name: CodecName) -> Codec:
    """The codec a job's ``codec`` setting names; "auto" is msgspec when it is installed.

    "msgspec" without msgspec raises ImportError (the configuration check refuses that
    job first, naming the extra to install).
    """
    global _msgspec
    if name == "json" or (name == "auto" and not msgspec_installed()):
        return JSON
    if _msgspec is None:
        from supervisor.codec_msgspec import MsgspecCodec

        _msgspec = MsgspecCodec()
    return _msgspec
