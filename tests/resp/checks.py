#!/usr/bin/env python3
"""Small checks tests/resp/run.sh needs, in plain Python (no client library).

  checks.py keyslot KEY...            Redis Cluster's slot of each key (CRC16-XMODEM of the
                                      key or of its first non-empty {hashtag}, mod 16384)
  checks.py slots PORT... < JSON      CLUSTER SLOTS (redis-cli -2 --json) covers 0..16383
                                      exactly once, every master and replica is one of PORTs
  checks.py agree URL P PORT=ID,... KEY... < JSON
                                      kache's HTTP placement agrees with CLUSTER SLOTS: each
                                      key's partition is slot * P / 16384, and the range
                                      holding its slot names its owners, the first as master
  checks.py settled EPOCH URL...      every node's /v1/cluster is at EPOCH with nothing moving
"""

import json
import sys
import urllib.parse
import urllib.request


def crc16(data):
    """CRC16-CCITT (XMODEM), the function Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def keyslot(key):
    data = key.encode()
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16(data) % 16384


def check_slots(ports, text):
    """Returns the problems with one CLUSTER SLOTS answer (an empty list when it is right)."""
    try:
        ranges = json.loads(text)
    except json.JSONDecodeError as err:
        return [f"CLUSTER SLOTS is not JSON ({err}): {text[:200]!r}"]
    problems = []
    covered = [0] * 16384
    for entry in ranges:
        start, end, nodes = entry[0], entry[1], entry[2:]
        if not (0 <= start <= end <= 16383):
            problems.append(f"bad range {start}-{end}")
            continue
        for slot in range(start, end + 1):
            covered[slot] += 1
        if not nodes:
            problems.append(f"range {start}-{end} has no master")
        for node in nodes:
            if int(node[1]) not in ports:
                problems.append(f"range {start}-{end} names {node[0]}:{node[1]}, not a member ({sorted(ports)})")
    holes = [s for s, n in enumerate(covered) if n == 0]
    twice = [s for s, n in enumerate(covered) if n > 1]
    if holes:
        problems.append(f"{len(holes)} slots uncovered, first {holes[0]}")
    if twice:
        problems.append(f"{len(twice)} slots covered more than once, first {twice[0]}")
    return problems


def check_agree(url, partitions, port_ids, keys, text):
    """Returns the problems where /v1/cluster/keys and CLUSTER SLOTS disagree."""
    ranges = json.loads(text)
    ids = dict(pair.split("=", 1) for pair in port_ids.split(","))
    problems = []
    for key in keys:
        slot = keyslot(key)
        quoted = urllib.parse.quote(key, safe="")
        with urllib.request.urlopen(f"{url}/v1/cluster/keys/{quoted}", timeout=2) as response:
            placement = json.load(response)
        if placement["partition"] != slot * partitions // 16384:
            problems.append(f"{key}: slot {slot}, HTTP partition {placement['partition']}, "
                            f"expected {slot * partitions // 16384}")
        holding = [r for r in ranges if r[0] <= slot <= r[1]]
        if len(holding) != 1:
            problems.append(f"{key}: slot {slot} is in {len(holding)} CLUSTER SLOTS ranges")
            continue
        named = [ids.get(str(node[1]), f"port {node[1]}") for node in holding[0][2:]]
        owners = placement["owners"]
        if not named or named[0] != owners[0] or sorted(named) != sorted(owners):
            problems.append(f"{key}: slot {slot} range {holding[0][0]}-{holding[0][1]} names "
                            f"{named} (first is master), HTTP owners {owners}")
    return problems


def settled(epoch, url):
    with urllib.request.urlopen(url + "/v1/cluster", timeout=2) as response:
        report = json.load(response)
    return (report["epoch"] == epoch and not report["rebalance"]["active"]
            and report["ownership"]["pending"] == 0 and report["ownership"]["heldNotOwned"] == 0)


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "keyslot":
        for key in args:
            print(keyslot(key))
        return 0
    if command == "slots":
        text = sys.stdin.read()
        problems = check_slots({int(p) for p in args}, text)
        for problem in problems[:10]:
            print(problem)
        if not problems:
            print(f"{len(json.loads(text))} ranges cover slots 0..16383 exactly once")
        return 1 if problems else 0
    if command == "agree":
        url, partitions, port_ids, keys = args[0], int(args[1]), args[2], args[3:]
        problems = check_agree(url, partitions, port_ids, keys, sys.stdin.read())
        for problem in problems[:10]:
            print(problem)
        return 1 if problems else 0
    if command == "settled":
        try:
            return 0 if all(settled(int(args[0]), url) for url in args[1:]) else 1
        except (OSError, ValueError, KeyError):
            return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
