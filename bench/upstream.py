#!/usr/bin/env python3
"""A counting HTTP upstream for bench/readthrough.sh.

usage: upstream.py PORT [BODY_BYTES] [DELAY_MS]

Answers GET of any path with 200, `Cache-Control: max-age=3600` and a body of BODY_BYTES
bytes (default 1024), after DELAY_MS milliseconds (default 0), over HTTP/1.1 keep-alive.
It counts the requests of each path:
  GET /__count   {"total": requests, "distinct": paths}   (not counted itself)
  GET /__reset   sets both to 0
One asyncio loop, so a thousand concurrent connections cost a thousand small tasks, not
threads; its speed does not matter for hits, which never reach it.
"""
import asyncio
import collections
import json
import sys

counts = collections.Counter()


def response(status, body, extra=b""):
    return (b"HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n%s\r\n"
            % (status, len(body), extra)) + body


async def serve(reader, writer, body, delay):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            path = target.split(b"?", 1)[0]
            if path == b"/__count":
                stats = {"total": sum(counts.values()), "distinct": len(counts)}
                writer.write(response(b"200 OK", json.dumps(stats).encode()))
            elif path == b"/__reset":
                counts.clear()
                writer.write(response(b"200 OK", b"{}"))
            elif method != b"GET":
                writer.write(response(b"405 Method Not Allowed", b""))
            else:
                counts[target] += 1
                if delay:
                    await asyncio.sleep(delay)
                writer.write(response(b"200 OK", body, b"Cache-Control: max-age=3600\r\n"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port, body_bytes, delay_ms):
    body = b"x" * body_bytes
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, body, delay_ms / 1000), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = sys.argv[1:]
    if not 1 <= len(args) <= 3:
        sys.exit(__doc__)
    asyncio.run(main(int(args[0]), int(args[1]) if len(args) > 1 else 1024,
                     int(args[2]) if len(args) > 2 else 0))
