#!/usr/bin/env python3
"""Reads random keys key:%012d (0..N-1, all expected present) from kache nodes until
STOP_FILE exists, then prints "reads misses errors". Used during a rebalance."""
import http.client
import os
import random
import sys

ports, n, stop = [int(p) for p in sys.argv[1].split(",")], int(sys.argv[2]), sys.argv[3]
conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=5) for p in ports]
reads = misses = errors = 0
while not os.path.exists(stop):
    i = random.randrange(n)
    conn = conns[i % len(conns)]
    try:
        conn.request("GET", "/v1/keys/key:%012d" % i)
        resp = conn.getresponse()
        resp.read()
        if resp.status == 404:
            misses += 1
        elif resp.status != 200:
            errors += 1
    except Exception:
        errors += 1
        conns[i % len(conns)] = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=5)
    reads += 1
print(reads, misses, errors)
