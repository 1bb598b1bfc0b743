#!/usr/bin/env python3
"""A redis-py workload that proves a RESP cluster loses nothing while it reshards.

Worker threads drive `redis.Redis` (one node, cluster-unaware: every key it does not own
must be forwarded) and `redis.cluster.RedisCluster` (routes by CLUSTER SLOTS) until a stop
file appears. Each worker owns its keys, so the history of a key is sequential and the
checker can say what every read may return:

- an acknowledged write sets the key's state; an op whose outcome is unknown (a timeout or
  a connection error) only adds the states it could have left, and they stay possible for
  good (its request may still land later);
- a read must return a possible state, during the run and in the final pass, through
  fresh clients of both kinds, after the stop file;
- an error reply (MOVED that is not followed, CROSSSLOT, ERR ...) to an op that completed
  is a violation, whatever it was.

Values are unique per write, so a read tells which write it saw. Every op goes to the
ops log (JSON lines). Exit status: 0 clean, 1 violations, 2 the workload could not run.

  workload.py --plain 127.0.0.1:6379 --cluster 127.0.0.1:6379,127.0.0.1:6380 \
      --stop-file /tmp/stop --ops-log /tmp/ops.jsonl
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

TTL_SECONDS = 600  # far beyond the run, so no key expires while it is checked
MISSING = None


class Unknown(Exception):
    """The op may or may not have taken effect: treat it as concurrent, never as failed."""


def classify(err):
    """Maps a client exception to Unknown (no answer) or re-raises it as an error reply."""
    if isinstance(err, (RedisConnectionError, RedisTimeoutError, OSError)):
        return Unknown(repr(err))
    # Raised when every known node refused the connection while refreshing the slot map.
    if isinstance(err, RedisClusterException) and "cannot be connected" in str(err):
        return Unknown(repr(err))
    return err


class KeyModel:
    """What a key may hold: states are (value, has_ttl); ghosts come from unknown ops."""

    def __init__(self):
        self.states = {(MISSING, False)}
        self.ghosts = set()
        self.ghost_ttl = False
        self.history = []

    def values(self):
        return {v for v, _ in self.states} | self.ghosts

    def clean(self):
        return not self.ghosts and not self.ghost_ttl

    def acked(self, states):
        self.states = set(states)

    def unknown(self, states):
        self.ghosts |= {v for v, _ in states}
        self.states |= set(states)


class Checker:
    """Shared tallies and violations; each key's model is touched by one worker only."""

    def __init__(self, ops_log):
        self.lock = threading.Lock()
        self.counts = {}
        self.violations = []
        self.log = open(ops_log, "w", encoding="utf-8") if ops_log else None

    def record(self, client, op, keys, args, outcome, result):
        with self.lock:
            tally = self.counts.setdefault(client, {"ok": 0, "unknown": 0, "error": 0})
            tally[outcome] += 1
            if self.log:
                entry = {"t": round(time.time(), 3), "client": client, "op": op,
                         "keys": keys, "args": args, "outcome": outcome, "result": result}
                self.log.write(json.dumps(entry, default=str) + "\n")

    def violate(self, message, model=None):
        with self.lock:
            if len(self.violations) < 1000:
                tail = model.history[-8:] if model else []
                self.violations.append({"message": message, "history": tail})


class Worker(threading.Thread):
    """One client, its own keys, random ops until stopped."""

    def __init__(self, name, make_client, cluster, checker, args, seed):
        super().__init__(name=name, daemon=True)
        self.label = name
        self.cluster = cluster
        self.client = make_client()
        self.checker = checker
        self.args = args
        self.rng = random.Random(seed)
        self.seq = 0
        self.keys = {f"{args.prefix}:{name}:k{i}": KeyModel() for i in range(args.keys)}
        self.single = list(self.keys)
        # Groups share a hashtag, so MSET/MGET are one slot for Redis Cluster; the plain
        # client also gets groups spanning slots (kache fans them out).
        self.groups = [[f"{args.prefix}:{{{name}g{g}}}:m{j}" for j in range(4)]
                       for g in range(args.groups)]
        if not cluster:
            self.groups += [[f"{args.prefix}:{name}x{g}:m{j}" for j in range(3)]
                            for g in range(args.groups)]
        for group in self.groups:
            for key in group:
                self.keys[key] = KeyModel()

    def value(self):
        self.seq += 1
        return f"{self.label}-{self.seq}"

    def call(self, op, keys, fn, *args):
        """Runs one op; returns (outcome, result) and logs it."""
        try:
            result = fn(*args)
            outcome = "ok"
        except Exception as err:  # noqa: BLE001 - every client failure is classified
            mapped = classify(err)
            outcome = "unknown" if isinstance(mapped, Unknown) else "error"
            result = repr(err)
        self.checker.record(self.label, op, keys, list(args), outcome, result)
        for key in keys:
            self.keys[key].history.append((op, args, outcome, result))
        if outcome == "error":
            self.checker.violate(f"{self.label}: {op} {keys} {list(args)} -> {result}",
                                 self.keys[keys[0]])
        return outcome, result

    def check_read(self, key, got, op):
        model = self.keys[key]
        if got not in model.values():
            self.checker.violate(
                f"{self.label}: {op} {key} returned {got!r}, possible {sorted(map(str, model.values()))}",
                model)

    def write(self, key, states, outcome):
        if outcome == "ok":
            self.keys[key].acked(states)
        else:  # unknown, or an error reply: it may have been applied anywhere
            self.keys[key].unknown(states)

    def step(self):
        c, rng = self.client, self.rng
        roll = rng.random()
        key = rng.choice(self.single)
        model = self.keys[key]
        if roll < 0.30:
            v = self.value()
            outcome, _ = self.call("SET", [key], c.set, key, v)
            self.write(key, [(v, False)], outcome)
        elif roll < 0.40:
            v = self.value()
            outcome, _ = self.call("SET EX", [key], lambda k, x: c.set(k, x, ex=TTL_SECONDS), key, v)
            self.write(key, [(v, True)], outcome)
        elif roll < 0.65:
            outcome, got = self.call("GET", [key], c.get, key)
            if outcome == "ok":
                self.check_read(key, got, "GET")
        elif roll < 0.72:
            outcome, got = self.call("DEL", [key], c.delete, key)
            if outcome == "ok" and not self.cluster and model.clean():
                # RedisCluster retries after a connection error, so only the plain
                # client's DEL count is exact.
                existed = any(v is not MISSING for v, _ in model.states)
                if got != int(existed):
                    self.checker.violate(f"{self.label}: DEL {key} -> {got}, expected {int(existed)}", model)
            self.write(key, [(MISSING, False)], outcome)
        elif roll < 0.77:
            outcome, got = self.call("EXISTS", [key], c.exists, key)
            if outcome == "ok":
                possible = {int(v is not MISSING) for v in model.values()}
                if got not in possible:
                    self.checker.violate(f"{self.label}: EXISTS {key} -> {got}, possible {possible}", model)
        elif roll < 0.84:
            outcome, got = self.call("EXPIRE", [key], c.expire, key, TTL_SECONDS)
            live = [(v, True) for v, _ in model.states if v is not MISSING]
            if outcome == "ok" and model.clean():
                if bool(got) != bool(live):
                    self.checker.violate(f"{self.label}: EXPIRE {key} -> {got}, states {model.states}", model)
                elif got:
                    model.acked(live)
            else:
                model.ghost_ttl = True
                model.states |= set(live)
        elif roll < 0.90:
            outcome, got = self.call("TTL", [key], c.ttl, key)
            if outcome == "ok" and model.clean():
                ok = (got == -2 and (MISSING, False) in model.states) or \
                     (got == -1 and any(v is not MISSING and not t for v, t in model.states)) or \
                     (0 < got <= TTL_SECONDS and any(t for _, t in model.states))
                if not ok:
                    self.checker.violate(f"{self.label}: TTL {key} -> {got}, states {model.states}", model)
        elif roll < 0.95:
            group = rng.choice(self.groups)
            values = {k: self.value() for k in group}
            outcome, _ = self.call("MSET", group, c.mset, values)
            for k, v in values.items():
                self.write(k, [(v, False)], outcome)
        else:
            group = rng.choice(self.groups)
            outcome, got = self.call("MGET", group, c.mget, group)
            if outcome == "ok":
                for k, v in zip(group, got):
                    self.check_read(k, v, "MGET")

    def run(self):
        interval = 1.0 / self.args.rate if self.args.rate > 0 else 0
        deadline = time.monotonic() + self.args.max_seconds
        while not os.path.exists(self.args.stop_file) and time.monotonic() < deadline:
            started = time.monotonic()
            self.step()
            spare = interval - (time.monotonic() - started)
            if spare > 0:
                time.sleep(spare)


class DeleteProbe(Worker):
    """SET, DEL, GET of one key after another through the plain client: DEL must count the
    key it deletes and the GET must miss, also in the instant a move starts, which the
    random mix above reaches only now and then."""

    def run(self):
        self.args = argparse.Namespace(**{**vars(self.args), "rate": self.args.probe_rate})
        super().run()

    def step(self):
        c = self.client
        key = self.single[self.seq % len(self.single)]
        model = self.keys[key]
        v = self.value()
        outcome, _ = self.call("SET", [key], c.set, key, v)
        self.write(key, [(v, False)], outcome)
        clean = model.clean()
        outcome, got = self.call("DEL", [key], c.delete, key)
        if outcome == "ok" and clean and got != 1:
            self.checker.violate(f"{self.label}: DEL {key} -> {got}, expected 1 (SET {v} acknowledged)", model)
        self.write(key, [(MISSING, False)], outcome)
        outcome, got = self.call("GET", [key], c.get, key)
        if outcome == "ok":
            self.check_read(key, got, "GET after DEL")


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def clients(args):
    """Factories for the plain and the cluster client, with generous timeouts."""
    opts = {"socket_timeout": 5, "socket_connect_timeout": 2, "decode_responses": True}
    host, port = address(args.plain)
    nodes = [ClusterNode(*address(a)) for a in args.cluster.split(",")]
    return (lambda: redis.Redis(host=host, port=port, **opts),
            lambda: RedisCluster(startup_nodes=list(nodes), **opts))


def final_pass(workers, make_plain, make_cluster, checker, separate):
    """Reads every key through fresh clients of both kinds after the workload stopped
    (with separate keyspaces, each kind reads only its own workers' keys)."""
    checked = 0
    for label, make in (("final plain", make_plain), ("final cluster", make_cluster)):
        client = make()
        for worker in workers:
            if separate and worker.cluster != (label == "final cluster"):
                continue
            keys = list(worker.keys)
            for i in range(0, len(keys), 50):
                batch = keys[i:i + 50]
                try:
                    got = [client.get(k) for k in batch]
                except Exception as err:  # noqa: BLE001 - the final pass must answer
                    checker.violate(f"{label}: GET failed after the run: {err!r}")
                    return checked
                for key, value in zip(batch, got):
                    model = worker.keys[key]
                    checked += 1
                    if value not in model.values():
                        checker.violate(
                            f"{label}: {key} = {value!r}, possible {sorted(map(str, model.values()))}",
                            model)
        client.close()
    return checked


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", required=True, help="HOST:PORT for redis.Redis")
    parser.add_argument("--cluster", required=True, help="startup nodes HOST:PORT,...")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--ready-file", help="touched once every client has connected")
    parser.add_argument("--ops-log")
    parser.add_argument("--prefix", default="py")
    parser.add_argument("--workers", type=int, default=2, help="threads per client kind")
    parser.add_argument("--keys", type=int, default=150, help="single keys per worker")
    parser.add_argument("--groups", type=int, default=10, help="MSET/MGET groups per worker")
    parser.add_argument("--rate", type=float, default=200, help="ops/s per worker; 0 unpaced")
    parser.add_argument("--probe-rate", type=float, default=600, help="SET/DEL/GET rounds/s of the delete probe")
    parser.add_argument("--max-seconds", type=float, default=180)
    parser.add_argument("--separate-keyspaces", action="store_true",
                        help="--plain is not a node of --cluster (checking against real Redis)")
    parser.add_argument("--min-ok", type=int, default=200, help="acked ops each client needs")
    args = parser.parse_args()

    make_plain, make_cluster = clients(args)
    checker = Checker(args.ops_log)
    try:
        workers = [Worker(f"{kind}{i}", make, kind == "cluster", checker, args, seed=i * 7 + n)
                   for n, (kind, make) in enumerate((("plain", make_plain), ("cluster", make_cluster)))
                   for i in range(args.workers)]
        workers.append(DeleteProbe("plainprobe", make_plain, False, checker, args, seed=99))
        for worker in workers:
            worker.client.ping()
    except Exception as err:  # noqa: BLE001 - setup failures are exit status 2
        print(f"redis-py workload: cannot start: {err!r}", file=sys.stderr)
        return 2
    if args.ready_file:
        open(args.ready_file, "w", encoding="utf-8").close()
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    checked = final_pass(workers, make_plain, make_cluster, checker, args.separate_keyspaces)

    for kind in ("plain", "cluster"):
        ok = sum(t["ok"] for c, t in checker.counts.items() if c.startswith(kind))
        if ok < args.min_ok:
            checker.violate(f"{kind} clients completed only {ok} ops (need {args.min_ok})")
    for client, tally in sorted(checker.counts.items()):
        print(f"redis-py {client}: {tally['ok']} ok, {tally['unknown']} unknown outcome, "
              f"{tally['error']} error replies")
    print(f"redis-py: {sum(len(w.keys) for w in workers)} keys, {checked} final reads, "
          f"{elapsed:.1f}s, {len(checker.violations)} violations")
    for v in checker.violations[:20]:
        print(f"VIOLATION {v['message']}")
        for h in v["history"]:
            print(f"    {h}")
    if checker.log:
        checker.log.close()
    return 1 if checker.violations else 0


if __name__ == "__main__":
    sys.exit(main())
