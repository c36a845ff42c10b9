#!/usr/bin/env python3
"""slow-bodies: N connections, each sending a whole request head at once, then its body (as
Content-Length announces) RATE bytes a second (one by default), for at most SECS seconds. The
Content-Type is application/json unless a -H gives one.

usage: slow-bodies.py HOST PORT N SECS [-s SOURCE_ADDR] [-p PATH] [-m METHOD] [-l LENGTH]
                      [-r RATE] [-H 'Name: value']...

Prints one JSON line: failed (could not connect), refused (closed by the server within a
second without an answer), answered (an HTTP answer came, by status, and the longest wait for
one), closed (cut later without an answer, with the seconds the first and last lasted), open
(still open at the end)."""
import argparse
import asyncio
import json
import time


async def one(a, res):
    t0 = time.monotonic()
    try:
        r, w = await asyncio.open_connection(a.host, a.port, local_addr=(a.source, 0) if a.source else None)
    except OSError:
        res["failed"] += 1
        return
    head = f"{a.method} {a.path} HTTP/1.1\r\nHost: slow\r\n"
    if not any(h.lower().startswith("content-type:") for h in a.header):
        head += "Content-Type: application/json\r\n"
    head += "".join(h + "\r\n" for h in a.header)
    head += f"Content-Length: {a.length}\r\n\r\n"
    got = b""
    sent = 0
    state = "open"
    try:
        w.write(head.encode())
        await w.drain()
        while time.monotonic() - t0 < a.secs:
            if sent < a.length:
                n = min(a.rate, a.length - sent)
                w.write(b" " * n)
                sent += n
                await w.drain()
            try:
                data = await asyncio.wait_for(r.read(4096), 1.0)
            except asyncio.TimeoutError:
                continue
            if data:
                got += data
                if b"\r\n" in got:
                    state = "answered"
                    break
            else:
                state = "closed"
                break
    except OSError:
        state = "closed"
    took = time.monotonic() - t0
    if state == "answered":
        code = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/") else "junk"
        res["answered"][code] = res["answered"].get(code, 0) + 1
        res["answer_max_s"] = max(res["answer_max_s"], round(took, 1))
    elif state == "closed" and took < 1.0:
        res["refused"] += 1
    elif state == "closed":
        res["closed"].append(took)
    else:
        res["open"] += 1
    w.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("secs", type=float)
    p.add_argument("-s", "--source")
    p.add_argument("-p", "--path", default="/orders")
    p.add_argument("-m", "--method", default="POST")
    p.add_argument("-l", "--length", type=int, default=60000)
    p.add_argument("-r", "--rate", type=int, default=1)
    p.add_argument("-H", "--header", action="append", default=[])
    a = p.parse_args()
    res = {"failed": 0, "refused": 0, "answered": {}, "answer_max_s": 0, "open": 0, "closed": []}
    await asyncio.gather(*(one(a, res) for _ in range(a.n)))
    c = res.pop("closed")
    res["closed"] = len(c)
    res["closed_min_s"] = round(min(c), 1) if c else None
    res["closed_max_s"] = round(max(c), 1) if c else None
    print(json.dumps(res))


asyncio.run(main())
