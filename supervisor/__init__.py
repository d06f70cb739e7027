"""stream-supervisor: keeps a host's streaming jobs running, checkpointed and honest."""

from __future__ import annotations

from supervisor.errors import FatalError, SupervisorError, TransientError

__all__ = ["FatalError", "SupervisorError", "TransientError", "__version__"]

__version__ = "0.1.0"
