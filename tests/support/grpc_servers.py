"""gRPC backends on 127.0.0.1 for the end-to-end tests and the benchmark: real grpcio servers
(generic handlers, raw bytes: no .proto needed) that count the calls they handle, and a raw
HTTP/2 server (the `h2` library) that records what it receives and can misbehave as a mirror
may (reset streams, GOAWAY, floods, answers without trailers or without `grpc-status`).
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events

SERVICE = "test.Echo"
ECHO = f"/{SERVICE}/Echo"
STREAM = f"/{SERVICE}/Stream"
COLLECT = f"/{SERVICE}/Collect"
CHAT = f"/{SERVICE}/Chat"


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message


def unframe(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 5:
        _, n = struct.unpack(">BI", data[:5])
        out.append(data[5 : 5 + n])
        data = data[5 + n :]
    return out


class GrpcServer:
    """A grpcio server: `Echo` (unary), `Stream` (server streaming, `interval` seconds apart),
    `Collect` (client streaming), `Chat` (bidirectional, one answer per message). `calls`
    counts handled calls per method; `seen` keeps each Echo request message."""

    def __init__(
        self,
        name: str = "primary",
        *,
        tls: tuple[bytes, bytes] | None = None,
        interval: float = 1.0,
        workers: int = 8,
    ) -> None:
        self.name = name
        self.interval = interval
        self.calls: Counter[str] = Counter()
        self.seen: list[bytes] = []
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
                "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
                "Collect": grpc.stream_unary_rpc_method_handler(self._collect),
                "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self.server.add_generic_rpc_handlers((handler,))
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            key, cert = tls
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    def _count(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] += 1
            self.metadata.append(dict(context.invocation_metadata()))

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("Echo", context)
        with self._lock:
            self.seen.append(request)
        if request.startswith(b"fail:"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request[5:].decode())
        return f"{self.name}:".encode() + request

    def _stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._count("Stream", context)
        for i in range(3):
            if i:
                time.sleep(self.interval)
            yield f"{self.name}:{i}".encode()

    def _collect(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._count("Collect", context)
        total = sum(len(r) for r in requests)
        return f"{self.name}:{total}".encode()

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._count("Chat", context)
        for message in requests:
            yield f"{self.name}:".encode() + message

    def handled(self, method: str = "Echo") -> int:
        with self._lock:
            return self.calls[method]

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


def tls_pair(tmp: Path) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) of a self-signed certificate for `localhost` and 127.0.0.1,
    made with the `cryptography` package mitmproxy already depends on."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "grpc-key.pem").write_bytes(key_pem)
    (tmp / "grpc-cert.pem").write_bytes(cert_pem)
    return key_pem, cert_pem


# --- a raw HTTP/2 server that records and misbehaves ------------------------------------------

Behaviour = Callable[["H2Exchange"], None]


@dataclass
class H2Exchange:
    """One stream as the raw server saw it; `answer` is what the behaviour sends back."""

    conn: h2.connection.H2Connection
    sock: socket.socket
    stream_id: int
    headers: dict[bytes, bytes]
    body: bytes = b""

    def send(self) -> None:
        self.sock.sendall(self.conn.data_to_send())


def grpc_ok(ex: H2Exchange) -> None:
    """A well-formed gRPC answer: headers, one message, trailers with grpc-status 0."""
    ex.conn.send_headers(ex.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    ex.conn.send_data(ex.stream_id, frame(b"raw:" + b"".join(unframe(ex.body))))
    ex.conn.send_headers(ex.stream_id, [("grpc-status", "0")], end_stream=True)
    ex.send()


def grpc_status(code: int, message: str = "") -> Behaviour:
    def answer(ex: H2Exchange) -> None:
        fields = [(":status", "200"), ("content-type", "application/grpc")]
        fields += [("grpc-status", str(code)), ("grpc-message", message)]
        ex.conn.send_headers(ex.stream_id, fields, end_stream=True)  # trailers-only
        ex.send()

    return answer


def no_grpc_status(ex: H2Exchange) -> None:
    """200 with a body and no trailers: not a gRPC answer."""
    ex.conn.send_headers(ex.stream_id, [(":status", "200"), ("content-type", "text/plain")])
    ex.conn.send_data(ex.stream_id, b"not grpc", end_stream=True)
    ex.send()


def reset_stream(ex: H2Exchange) -> None:
    ex.conn.reset_stream(ex.stream_id, error_code=2)  # INTERNAL_ERROR
    ex.send()


def goaway(ex: H2Exchange) -> None:
    """A graceful refusal: GOAWAY that processed no stream, then the connection stays open
    until the client hangs up, as real servers drain. Closing at once instead would make the
    client meet a TCP reset that may overtake the GOAWAY frame it has not read yet."""
    ex.conn.close_connection(error_code=0, last_stream_id=0)
    ex.send()
    ex.sock.settimeout(5)
    while ex.sock.recv(65536):
        pass


def never_trailers(ex: H2Exchange) -> None:
    ex.conn.send_headers(ex.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    ex.conn.send_data(ex.stream_id, frame(b"half"))
    ex.send()
    time.sleep(30)


def ping_flood(ex: H2Exchange) -> None:
    for i in range(5000):
        ex.conn.ping(struct.pack(">Q", i))
        if i % 100 == 0:
            try:
                ex.send()
            except OSError:
                return
    try:
        ex.send()
    except OSError:
        pass
    time.sleep(5)


@dataclass
class H2Server:
    """A plaintext (h2c, prior knowledge) HTTP/2 server on 127.0.0.1; one thread per
    connection. `received` holds every stream's request headers and body."""

    behaviour: Behaviour = grpc_ok
    received: list[H2Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.settimeout(30)
        pending: dict[int, H2Exchange] = {}
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {bytes(k): bytes(v) for k, v in event.headers}
                        pending[event.stream_id] = H2Exchange(conn, sock, event.stream_id, headers)
                    elif isinstance(event, h2.events.DataReceived):
                        pending[event.stream_id].body += event.data
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        ex = pending.pop(event.stream_id)
                        self.received.append(ex)
                        self.behaviour(ex)
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def h2c_grpc_call(port: int, path: str, message: bytes, authority: str) -> list[h2.events.Event]:
    """One gRPC call over h2c with prior knowledge, as a raw client; the stream's events."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", authority),
                (":path", path),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        conn.send_data(1, frame(message), end_stream=True)
        sock.sendall(conn.data_to_send())
        events: list[h2.events.Event] = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            data = sock.recv(65536)
            assert data, "the proxy closed the connection before the stream ended"
            for event in conn.receive_data(data):
                if getattr(event, "stream_id", None) == 1:
                    events.append(event)
            sock.sendall(conn.data_to_send())
        return events


def tls_client_context(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.set_alpn_protocols(["h2"])
    return ctx
