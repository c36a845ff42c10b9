#!/usr/bin/env python3
"""slow-heads: N connections from one source address, each sending a request head one byte a
second (every byte resets an idle timer), for at most SECS seconds.

usage: slow-heads.py HOST PORT N SECS [SOURCE_ADDR]

Prints one JSON line: refused (closed by the server within a second), closed (later, with the
seconds the first and last lasted), open (still open at the end), failed (could not connect)."""
import asyncio
import json
import sys
import time


async def one(host, port, src, secs, res):
    t0 = time.monotonic()
    try:
        r, w = await asyncio.open_connection(host, port, local_addr=(src, 0) if src else None)
    except OSError:
        res["failed"] += 1
        return
    head = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4000
    i = 0
    closed = False
    while time.monotonic() - t0 < secs:
        try:
            if i < len(head):
                w.write(head[i:i + 1])
                i += 1
                await w.drain()
            data = await asyncio.wait_for(r.read(4096), 1.0)
            closed = True  # EOF, or an answer: the server is done with it
            break
        except asyncio.TimeoutError:
            continue
        except OSError:
            closed = True
            break
    took = time.monotonic() - t0
    if not closed:
        res["open"] += 1
    elif took < 1.0:
        res["refused"] += 1
    else:
        res["closed"].append(took)
    w.close()


async def main():
    host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    src = sys.argv[5] if len(sys.argv) > 5 else None
    res = {"failed": 0, "refused": 0, "open": 0, "closed": []}
    await asyncio.gather(*(one(host, port, src, secs, res) for _ in range(n)))
    c = res.pop("closed")
    res["closed"] = len(c)
    res["closed_min_s"] = round(min(c), 1) if c else None
    res["closed_max_s"] = round(max(c), 1) if c else None
    print(json.dumps(res))


asyncio.run(main())
