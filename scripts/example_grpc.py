"""The two Greeter servers of configs/examples/grpc-mirror on 127.0.0.1, plain gRPC (h2c) with
grpcio and no .proto (the messages are written and read as protobuf bytes by hand):

    python scripts/example_grpc.py [--ports 28300,28301]

`helloworld.Greeter/SayHello` takes a HelloRequest (field 1: name) and answers a HelloReply
(field 1: message): v1 on the first port says "Hello NAME", v2 on the second "Hi NAME" (the
candidate's change). `helloworld.Greeter/SayHelloStream` answers three replies a second apart.
Each server prints a line per call it handles. Runs until Ctrl-C.

    python scripts/example_grpc.py call --proxy 127.0.0.1:8000 [-n 10]

calls SayHello through the proxy with the service's name as :authority.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

AUTHORITY = "greeter.example.internal"


def string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data  # short strings only: one-byte length


def name_of(request: bytes) -> str:
    return request[2 : 2 + request[1]].decode() if request[:1] == b"\n" else "?"


def server(version: str, port: int) -> tuple[grpc.Server, int]:
    """A started Greeter of `version` on `port` (0: any); (the server, its port)."""
    greeting = "Hello" if version == "v1" else "Hi"

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        name = name_of(request)
        print(f"{version}: SayHello {name}", flush=True)
        return string_field(1, f"{greeting} {name}")

    def say_hello_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        name = name_of(request)
        print(f"{version}: SayHelloStream {name}", flush=True)
        for i in range(3):
            if i:
                time.sleep(1)
            yield string_field(1, f"{greeting} {name} #{i}")

    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
            "SayHelloStream": grpc.unary_stream_rpc_method_handler(say_hello_stream),
        },
    )
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    s.add_generic_rpc_handlers((handler,))
    bound = s.add_insecure_port(f"127.0.0.1:{port}")
    s.start()
    return s, bound


def call(proxy: str, n: int) -> list[str]:
    """n SayHello calls through the proxy; the replies' messages (also printed)."""
    replies = []
    with grpc.insecure_channel(proxy, options=[("grpc.default_authority", AUTHORITY)]) as ch:
        say = ch.unary_unary("/helloworld.Greeter/SayHello")
        for i in range(n):
            reply = say(string_field(1, f"world{i}"), timeout=10)
            replies.append(name_of(reply))
            print(replies[-1], flush=True)
    return replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    ap.add_argument("--ports", default="28300,28301", help="v1,v2 ports (default %(default)s)")
    c = sub.add_parser("call", help="call SayHello through the proxy")
    c.add_argument("--proxy", default="127.0.0.1:8000")
    c.add_argument("-n", type=int, default=10)
    args = ap.parse_args()
    if args.command == "call":
        call(args.proxy, args.n)
        return
    v1, v2 = (int(p) for p in args.ports.split(","))
    servers = [server("v1", v1)[0], server("v2", v2)[0]]
    print(f"Greeter v1 on 127.0.0.1:{v1}, v2 on 127.0.0.1:{v2} (Ctrl-C stops them)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    for s in servers:
        s.stop(grace=None)


if __name__ == "__main__":
    main()
