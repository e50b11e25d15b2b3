"""A control stack speaking the MCP admin tools on stdio, for tests/test_admin_tools.py.

    python tests/admin_stdio_server.py DATA_DIR [CANCEL_AFTER]

It logs to stderr, and while serving it prints a stray line to stdout, which must land on
stderr: nothing but MCP may reach stdout. It exits 0 when the client closes stdin, or
CANCEL_AFTER seconds after starting (as on SIGTERM: the stdio task cancelled, stdin open).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from control_stack import stack

from control.tools import admin_server, serve_stdio


async def main(data_dir: Path, cancel_after: float | None) -> None:
    async with stack(data_dir) as s:
        server = admin_server(s.control)

        async def stray() -> None:
            await asyncio.sleep(0.3)
            print("stray print while serving", flush=True)
            logging.getLogger("gwfast.control").warning("a log line while serving")

        task = asyncio.create_task(stray())
        serving = asyncio.create_task(serve_stdio(server))
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        task.cancel()
    print("stdio stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None))
