#!/usr/bin/env python3
"""Loads N keys key:%012d with VALUE_BYTES-byte values into kache (batch API) or Redis (RESP pipe).

usage: load.py kache [https://]HOST:PORT N [VALUE_BYTES]
           # https: verified against the CA file in $CACERT; $TOKEN, when set, is sent
           # as a bearer token
       load.py resp N [VALUE_BYTES]        # writes a RESP stream to stdout for redis-cli --pipe
       load.py resp-cluster N VALUE_BYTES DIR PORT:FIRST-LAST[,...]
           # Redis Cluster: one RESP file per master port in DIR, each key sent to the
           # master that owns its hash slot (CRC16 mod 16384), for redis-cli --pipe
"""
import http.client
import json
import os
import ssl
import sys


def kache(addr, n, size):
    secure = addr.startswith("https://")
    host, port = addr.removeprefix("https://").rsplit(":", 1)
    if secure:
        context = ssl.create_default_context(cafile=os.environ["CACERT"])
        context.check_hostname = False
        conn = http.client.HTTPSConnection(host, int(port), context=context)
    else:
        conn = http.client.HTTPConnection(host, int(port))
    headers = {"Content-Type": "application/json"}
    if os.environ.get("TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["TOKEN"]
    value = "x" * size
    batch = 1000
    for start in range(0, n, batch):
        items = [{"key": "key:%012d" % i, "value": value} for i in range(start, min(n, start + batch))]
        conn.request("POST", "/v1/batch/put", json.dumps({"items": items}), headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit("batch put failed: %d %s" % (resp.status, body[:200]))
        failed = [item for item in json.loads(body)["items"] if item["status"] >= 300]
        if failed:
            sys.exit("batch put refused items: %s" % failed[:3])


def resp(n, size):
    out = sys.stdout.buffer
    value = b"x" * size
    chunk = []
    for i in range(n):
        key = b"key:%012d" % i
        chunk.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
        if len(chunk) == 10000:
            out.write(b"".join(chunk))
            chunk = []
    out.write(b"".join(chunk))


def crc16_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


def resp_cluster(n, size, out_dir, ranges):
    table = crc16_table()
    owners = []  # (first, last, port)
    for part in ranges.split(","):
        port, span = part.split(":")
        first, last = span.split("-")
        owners.append((int(first), int(last), port))
    files = {port: open("%s/%s.resp" % (out_dir, port), "wb") for _, _, port in owners}
    value = b"x" * size
    for i in range(n):
        key = b"key:%012d" % i
        crc = 0
        for byte in key:
            crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
        slot = crc % 16384
        port = next(p for first, last, p in owners if first <= slot <= last)
        files[port].write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
    for f in files.values():
        f.close()


if __name__ == "__main__":
    if sys.argv[1] == "kache":
        kache(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 100)
    elif sys.argv[1] == "resp-cluster":
        resp_cluster(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "resp":
        resp(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 100)
    else:
        sys.exit(__doc__)
