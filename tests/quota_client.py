"""One process of test_quota's cross-process test: N concurrent checks against Redis.

    python tests/quota_client.py URL KEY N REQUESTS PERIOD

Prints ``ready`` once connected, waits for a line on stdin (so every process starts at
once), sends N checks at once (the pool bounds the connections) and prints its counts as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from gwfast.quota import RedisQuotas


async def main(url: str, key: bytes, n: int, requests: int, period: float) -> None:
    q = RedisQuotas(url, timeout=5.0, max_connections=32)
    try:
        await q.client.ping()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        waits = await asyncio.gather(*(q.check(key, requests, period) for _ in range(n)))
        print(
            json.dumps(
                {
                    "admitted": q.admitted,
                    "rejected": q.rejected,
                    "store_errors": q.store_errors,
                    "zero_waits": sum(1 for w in waits if w == 0.0),
                }
            ),
            flush=True,
        )
    finally:
        await q.aclose()


if __name__ == "__main__":
    url, key, n, requests, period = sys.argv[1:6]
    asyncio.run(main(url, key.encode(), int(n), int(requests), float(period)))
