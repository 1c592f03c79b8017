"""redis-py (Debian's python3-redis) writing to and checking a Divan cluster over RESP.

write PORTS JOURNAL STOPFILE [--pipeline N] [--reads]
    Until STOPFILE exists: SETs of unique keys (k:0007919, ...) to the nodes in turn, N per pipeline,
    and with --reads a GET of an acknowledged key on the next node after each batch. Every command
    returns a reply or an error within the socket timeout; each outcome is one journal line:
      ack KEY VALUE               the SET answered OK
      maybe KEY VALUE WHY         UNCERTAIN, or the connection failed or timed out: may have applied
      fail KEY VALUE WHY          TRYAGAIN or CLUSTERDOWN: must not have applied
      read-ok KEY | read-error KEY WHY | read-wrong KEY WANTED GOT
      unexpected WHY              any other error (a bug)
    Also prints "slowest SECONDS" at the end: the longest any command or pipeline took.

verify PORTS JOURNAL
    Reads every journaled key on every node (pipelined GETs, retrying TRYAGAIN for a while): an
    acknowledged key has its value, a failed one is absent, an uncertain one has its value or none.
    Prints "verified N keys on M nodes" or the mismatches, and exits 1 on any.
"""
import os
import random
import sys
import time

import redis

SOCKET_TIMEOUT = 15  # longer than the server's 10 s command timeout: a timeout here is a hang there


def connect(port):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=2)


def classify(error):
    text = str(error)
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return "maybe", f"{type(error).__name__}:{text}"
    if text.startswith("UNCERTAIN"):
        return "maybe", text
    if text.startswith("TRYAGAIN") or text.startswith("CLUSTERDOWN"):
        return "fail", text
    return "unexpected", text


def one_line(text):
    return text.replace("\n", " ").replace(" ", "_")


def write(ports, journal_path, stop_path, pipeline, reads):
    clients = [connect(port) for port in ports]
    acknowledged = []
    sequence = 0
    slowest = 0.0
    turn = 0
    with open(journal_path, "a", buffering=1) as journal:
        while not os.path.exists(stop_path):
            client = clients[turn % len(clients)]
            reader = clients[(turn + 1) % len(clients)]
            turn += 1
            batch = []
            for _ in range(pipeline):
                sequence += 1
                # A bijection of the sequence (below 1,000,003): unique keys spread over every region.
                batch.append((f"k:{sequence * 7919 % 1_000_003:07d}", f"v{sequence}-{random.randrange(1 << 30)}"))
            pipe = client.pipeline(transaction=False)
            for key, value in batch:
                pipe.set(key, value)
            started = time.monotonic()
            try:
                replies = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                replies = [error] * len(batch)
                # The node may be down: do not spin on it.
                time.sleep(0.05)
            slowest = max(slowest, time.monotonic() - started)
            for (key, value), reply in zip(batch, replies):
                if reply is True:
                    acknowledged.append((key, value))
                    journal.write(f"ack {key} {value}\n")
                elif isinstance(reply, Exception):
                    kind, why = classify(reply)
                    journal.write(f"{kind} {key} {value} {one_line(why)}\n")
                else:
                    journal.write(f"unexpected {key} {value} reply_{one_line(repr(reply))}\n")
            if reads and acknowledged:
                key, value = random.choice(acknowledged)
                started = time.monotonic()
                try:
                    got = reader.get(key)
                    if got == value.encode():
                        journal.write(f"read-ok {key}\n")
                    else:
                        journal.write(f"read-wrong {key} {value} {one_line(repr(got))}\n")
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
                    kind, why = classify(error)
                    line = f"read-error {key} {one_line(why)}" if kind != "unexpected" else f"unexpected read {one_line(why)}"
                    journal.write(line + "\n")
                    if isinstance(error, redis.ConnectionError):
                        time.sleep(0.05)
                slowest = max(slowest, time.monotonic() - started)
    print(f"slowest {slowest:.3f}")


def verify(ports, journal_path):
    expected = {}
    for line in open(journal_path):
        parts = line.split()
        if parts[0] in ("ack", "maybe", "fail"):
            expected[parts[1]] = (parts[0], parts[2])
    keys = sorted(expected)
    problems = []
    for port in ports:
        client = connect(port)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            deadline = time.monotonic() + 30
            while True:
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.get(key)
                try:
                    replies = pipe.execute(raise_on_error=False)
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    replies = [error]
                errors = [reply for reply in replies if isinstance(reply, Exception)]
                if not errors:
                    break
                if time.monotonic() > deadline:
                    problems.append(f"port {port}: reads keep failing: {errors[0]}")
                    break
                time.sleep(0.2)
            for key, reply in zip(chunk, replies):
                if isinstance(reply, Exception):
                    continue
                kind, value = expected[key]
                got = None if reply is None else reply.decode()
                if kind == "ack" and got != value:
                    problems.append(f"port {port}: acknowledged {key}={value} reads {got!r}")
                elif kind == "fail" and got is not None:
                    problems.append(f"port {port}: {key} failed definitely but reads {got!r}")
                elif kind == "maybe" and got not in (None, value):
                    problems.append(f"port {port}: uncertain {key}={value} reads {got!r}")
    if problems:
        print("\n".join(problems[:30]))
        print(f"{len(problems)} problems")
        sys.exit(1)
    print(f"verified {len(keys)} keys on {len(ports)} nodes")


if __name__ == "__main__":
    command, ports = sys.argv[1], [int(port) for port in sys.argv[2].split(",")]
    if command == "write":
        options = sys.argv[5:]
        pipeline = int(options[options.index("--pipeline") + 1]) if "--pipeline" in options else 1
        write(ports, sys.argv[3], sys.argv[4], pipeline, "--reads" in options)
    else:
        verify(ports, sys.argv[3])
