"""The three catalog servers of configs/examples/noise-learning on 127.0.0.1 (stdlib only):

    python scripts/example_servers.py [--ports 28160,28161,28162]

v1 twice (the primary and the baseline) and v2 (the candidate). Every answer is JSON with a
timestamp and a request id of its own (noise: they differ between any two answers); v2 differs
from v1 in one real way: the price of /items/N is 10% higher (`--candidate-delay MS` makes it
slower as well). Each answer is written in one send. Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler(version: str, delay: float = 0.0) -> type[BaseHTTPRequestHandler]:
    class Catalog(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Buffered: the head and the body leave in one send when handle_one_request flushes.
        # Unbuffered (http.server's default) they are two sends, and on a reused connection
        # Nagle here plus a delayed ACK at the client hold the body back about 40 ms.
        wbufsize = 64 * 1024

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if delay:
                time.sleep(delay)
            body: dict[str, object] = {
                "served_at": time.time_ns(),
                "trace": uuid.uuid4().hex,
                "path": self.path,
            }
            if self.path.startswith("/items/"):
                item = self.path.rsplit("/", 1)[-1]
                price = 10 * (sum(map(ord, item)) % 50 + 1)
                body["item"] = item
                body["price"] = round(price * 1.1, 2) if version == "v2" else price
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Catalog


class CatalogServer(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops connection attempts when a proxy opens several
    # at once (its sender's pool growing), and a dropped SYN is retried only after 1 s: a
    # latency of the backlog, not of the server.
    request_queue_size = 128


def serve(ports: list[int], candidate_delay: float = 0.0) -> list[ThreadingHTTPServer]:
    """Start v1 on ports[0] and ports[1], v2 on ports[2] (0: any), v2 answering
    `candidate_delay` seconds late; returns the servers."""
    servers = []
    for port, version in zip(ports, ("v1", "v1", "v2"), strict=True):
        delay = candidate_delay if version == "v2" else 0.0
        server = CatalogServer(("127.0.0.1", port), handler(version, delay))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--ports", default="28160,28161,28162", help="v1, v1-b and v2 (default: %(default)s)"
    )
    ap.add_argument(
        "--candidate-delay",
        type=float,
        default=0.0,
        metavar="MS",
        help="v2 answers this many milliseconds late (a slower candidate; default: 0)",
    )
    args = ap.parse_args()
    servers = serve([int(p) for p in args.ports.split(",")], args.candidate_delay / 1000)
    for s, name in zip(
        servers,
        ("catalog v1 (primary)", "catalog v1-b (baseline)", "catalog v2 (candidate)"),
        strict=True,
    ):
        print(f"{name} on 127.0.0.1:{s.server_address[1]}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for s in servers:
            s.shutdown()


if __name__ == "__main__":
    main()
