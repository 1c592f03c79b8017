"""redis-py (Debian's python3-redis) against a real Divan cluster: every node takes every command.

linearizable WRITER_PORTS READER_PORT COUNT
    COUNT times: SET a key on one of the writers (in turn), then GET it on the reader, which must
    return the value just written (a linearizable read, on a follower or a learner).

clients PORT OTHER_PORT LEARNER_PORT
    Writes on one node read on another and on the learner; a pipeline of 10,000 SETs; RESP3
    after HELLO 3; malformed streams (bad lengths, an oversized bulk, binary garbage) that close
    only their own connection while a client on the same node carries on.
Prints "ok" when every check held.
"""
import socket
import sys

import redis


def connect(port):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=15)


def expect(actual, wanted, what):
    if actual != wanted:
        raise AssertionError(f"{what}: got {actual!r}, wanted {wanted!r}")


def linearizable(writer_ports, reader_port, count):
    writers = [connect(port) for port in writer_ports]
    reader = connect(reader_port)
    for n in range(count):
        expect(writers[n % len(writers)].set(f"lin:{n % 7}", f"value {n}"), True, f"SET lin:{n % 7}")
        expect(reader.get(f"lin:{n % 7}"), f"value {n}".encode(), f"GET lin:{n % 7} on port {reader_port} after SET #{n}")


def raw_exchange(port, payload):
    """Sends payload on a fresh connection; returns what came back until the server closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        raw.sendall(payload)
        received = b""
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                return received
            received += chunk


def clients(port, other_port, learner_port):
    node, other, learner = connect(port), connect(other_port), connect(learner_port)
    # Writes on one node, read on another and on the learner.
    expect(node.set("city", "Istanbul"), True, "SET city")
    expect(other.get("city"), b"Istanbul", "GET city on another node")
    expect(learner.get("city"), b"Istanbul", "GET city on the learner")
    expect(learner.set("bridge", "Galata"), True, "SET on the learner (forwarded to the leader)")
    expect(node.get("bridge"), b"Galata", "GET bridge written through the learner")
    expect(other.incrby("visits", 5), 5, "INCRBY")
    expect(learner.get("visits"), b"5", "INCRBY seen on the learner")
    expect(node.mset({"m:1": "a", "m:2": "b"}), True, "MSET")
    expect(learner.mget(["m:1", "m:2", "m:3"]), [b"a", b"b", None], "MGET on the learner")
    expect(other.delete("m:1"), 1, "DEL")
    expect(learner.exists("m:1", "m:2"), 1, "EXISTS on the learner after DEL elsewhere")

    # A pipeline of 10,000 commands to different keys (commands on one key would run one after
    # another, each its own Raft round), read back on the learner.
    pipe = other.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"p:{i}", i)
    expect(pipe.execute(), [True] * 10_000, "pipeline replies")
    expect(learner.get("p:9999"), b"9999", "the pipeline's last SET on the learner")
    expect(node.mget([f"p:{i}" for i in range(0, 10_000, 1000)]), [str(i).encode() for i in range(0, 10_000, 1000)], "MGET of the pipeline's keys")

    # RESP3 after HELLO 3 (this redis-py speaks RESP2 only, so on a raw socket): a map, then RESP3 nulls.
    with socket.create_connection(("127.0.0.1", learner_port), timeout=15) as raw:
        raw.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n")
        hello = b""
        while not hello.endswith(b"+PONG\r\n"):
            hello += raw.recv(65536)
        expect(hello[:1], b"%", "HELLO 3 answers with a RESP3 map")
        expect(b"proto\r\n:3\r\n" in hello, True, f"HELLO 3 reports proto 3: {hello!r}")
        raw.sendall(b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n*2\r\n$3\r\nGET\r\n$4\r\ncity\r\n")
        received = b""
        while received.count(b"\r\n") < 3:
            received += raw.recv(65536)
        expect(received, b"_\r\n$8\r\nIstanbul\r\n", "RESP3 null and bulk replies")

    # Malformed streams close only their own connection; a client on the same node carries on.
    for payload, reply in [
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*\xff\xfe\x00garbage\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"PING\r\n*1\r\n$x\r\n", b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$67108865\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        ((bytes(range(14, 256)) * 271)[:65_537], b"-ERR Protocol error: too big inline request\r\n"),
    ]:
        for target, client in [(learner_port, learner), (port, node)]:
            expect(raw_exchange(target, payload), reply, f"reply to {payload[:20]!r} on port {target}")
            expect(client.get("city"), b"Istanbul", "the well-behaved client on the same node is unaffected")
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "linearizable":
        linearizable([int(port) for port in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4]))
        print("ok")
    else:
        clients(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
