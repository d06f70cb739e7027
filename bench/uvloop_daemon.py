"""`python -m supervisor`, on uvloop's event loop instead of asyncio's (bench/event_loop.py).

anyio's asyncio backend makes its loop with `asyncio.new_event_loop()`, which asks the
event-loop policy: uvloop's policy, set before the daemon starts, gives it uvloop's loop.
"""

import asyncio
import sys
from pathlib import Path

import uvloop

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from supervisor.cli import main

    sys.exit(main())
