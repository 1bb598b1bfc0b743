#!/usr/bin/env python3
"""GETs of URLS paths, EACH times each, round-robin over servers on 127.0.0.1, for
bench/readthrough.sh.

usage: herd.py PORTS PATH_FORMAT URLS EACH [CONCURRENCY]
  PORTS         comma-separated, e.g. 17400,17410,17420
  PATH_FORMAT   a path with one %d, the URL's index: /v1/upstreams/api/cold/%d
  CONCURRENCY   0 (default): open every connection first, then send every request at
                once, so that all URLS x EACH are in flight together (a cold herd);
                N: at most N requests at a time (warming a keyspace)

Request i asks for URL i % URLS through server i % len(PORTS): with 3 servers and 100
URLs, each URL's requests reach all three. One connection per request.
Prints one JSON line: requests, statuses, X-Cache values, errors (no response) and seconds.
"""
import asyncio
import collections
import json
import sys
import time

TIMEOUT = 60


async def connect(port):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)


async def get(conn, port, path):
    reader, writer = conn
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                     % (path.encode(), port))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = head[0].split(" ")[1]
    headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
    cache = next((v.strip() for k, v in headers.items() if k.lower() == "x-cache"), "-")
    return status, cache


async def main(ports, path_format, urls, each, concurrency):
    jobs = [(ports[i % len(ports)], path_format % (i % urls)) for i in range(urls * each)]
    statuses, caches, errors = collections.Counter(), collections.Counter(), []

    def note(result):
        if isinstance(result, BaseException):
            errors.append(repr(result))
        else:
            statuses[result[0]] += 1
            caches[result[1]] += 1

    start = time.monotonic()
    if concurrency == 0:
        conns = await asyncio.gather(*(connect(port) for port, _ in jobs), return_exceptions=True)
        start = time.monotonic()
        sends = [get(conn, port, path) for conn, (port, path) in zip(conns, jobs)
                 if not isinstance(conn, BaseException)]
        for conn in conns:
            if isinstance(conn, BaseException):
                note(conn)
        for result in await asyncio.gather(*sends, return_exceptions=True):
            note(result)
    else:
        slots = asyncio.Semaphore(concurrency)

        async def one(port, path):
            async with slots:
                return await get(await connect(port), port, path)

        for result in await asyncio.gather(*(one(p, path) for p, path in jobs), return_exceptions=True):
            note(result)
    print(json.dumps({
        "requests": len(jobs),
        "status": dict(statuses),
        "xcache": dict(caches),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(time.monotonic() - start, 3),
    }))


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    asyncio.run(main([int(p) for p in sys.argv[1].split(",")], sys.argv[2], int(sys.argv[3]),
                     int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) == 6 else 0))
