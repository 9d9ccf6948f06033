"""Misbehaving servers on 127.0.0.1 for the end-to-end tests and scripts/soak.py: each binds
port 0 itself and reports the port it got (`FaultServer.port`), so no other process can take it
in between. A fault is a small function run per accepted connection, one thread each.
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

Handler = Callable[[socket.socket], None]


def _read_head(conn: socket.socket) -> bytes:
    """Read one request (head, and a Content-Length body) so the peer is not reset early; its
    head, or b"" when the peer closed first."""
    conn.settimeout(5)
    got = read_request(conn)
    return got[0] if got is not None else b""


def silent(conn: socket.socket) -> None:
    """Accepts, reads, never answers (until the client gives up)."""
    conn.settimeout(30)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def drip(conn: socket.socket, delay: float = 0.03) -> None:
    """A valid answer, one byte at a time: slower than any sane mirror_timeout."""
    _read_head(conn)
    for b in b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b"d" * 20:
        conn.sendall(bytes([b]))
        time.sleep(delay)


def reset_mid_response(conn: socket.socket) -> None:
    """Starts a 1000-byte answer, sends 7 bytes of it, then resets (RST) the connection."""
    _read_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    time.sleep(0.05)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def garbage(conn: socket.socket) -> None:
    _read_head(conn)
    conn.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")
    time.sleep(0.1)


def huge_body(conn: socket.socket, size: int = 24 * 1024 * 1024) -> None:
    """A 24 MiB answer: the writer must discard it without buffering (it stops reading at 8 MiB)."""
    _read_head(conn)
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    block = b"h" * 65536
    sent = 0
    try:
        while sent < size:
            conn.sendall(block)
            sent += len(block)
    except OSError:
        pass


def status(code: int) -> Handler:
    def answer(conn: socket.socket) -> None:
        try:
            while _read_head(conn):
                conn.sendall(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok".encode())
        except OSError:
            pass

    return answer


def by_path(answer: Callable[[str], tuple[bytes, bytes]]) -> Handler:
    """Keep-alive HTTP/1.1: each request (up to 10,000 a connection) is answered 200 with
    `answer(path)`, (extra header lines, each ending in CRLF; body)."""

    def serve(conn: socket.socket) -> None:
        for head in keep_alive_requests(conn, 10_000, timeout=30):
            extra, body = answer(head.split(b" ", 2)[1].decode("latin-1"))
            head_out = b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n" % (extra, len(body))
            conn.sendall(head_out + body)

    return serve


class FaultServer:
    """Runs `handler` on each accepted connection (a thread each); `tls` wraps accepted sockets.

    Binds 127.0.0.1 port 0, or listens on `sock`, a socket already bound (say, the one behind
    `ports.refusing_socket()`, so that a refusing port starts answering without ever being free).
    """

    def __init__(
        self,
        handler: Handler,
        tls: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        if sock is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


def self_signed_context(tmp: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (no client trusts it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "selfsigned.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp / "self.crt"
    key_file = tmp / "self.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def plain_http_400(conn: socket.socket) -> None:
    """A plain-HTTP server's answer to a TLS ClientHello: a 400 and close."""
    conn.settimeout(5)
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass


def read_request(
    conn: socket.socket, data: bytes = b"", limit: int = 1 << 20
) -> tuple[bytes, bytes] | None:
    """One whole request (head, and a Content-Length body) from conn, after `data` already read;
    (head, the bytes after the request), or None when the peer closed first. A head still
    without its end after `limit` bytes is taken as it is."""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(rest) < need:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head, rest[need:]


def keep_alive_requests(conn: socket.socket, most: int, timeout: float = 30.0) -> Iterator[bytes]:
    """The heads of up to `most` requests read one after another on one connection (bodies
    read and dropped); ends when the peer closes."""
    conn.settimeout(timeout)
    data = b""
    for _ in range(most):
        got = read_request(conn, data)
        if got is None:
            return
        head, data = got
        yield head


class Recorder:
    """A keep-alive HTTP/1.1 server that records each request head and answers `200 <name>`."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self.server = FaultServer(self._serve)
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def _serve(self, conn: socket.socket) -> None:
        # Bounded: one connection never serves more than 10,000 requests.
        for head in keep_alive_requests(conn, 10_000, timeout=10):
            with self._lock:
                self.heads.append(head)
            body = self.name
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    @property
    def count(self) -> int:
        return len(self.heads)

    @property
    def hosts(self) -> list[str]:
        """The Host of each recorded request, in order ("" when it had none)."""
        out = []
        for head in list(self.heads):
            m = re.search(rb"(?im)^host:\s*(\S+)", head)
            out.append(m.group(1).decode() if m else "")
        return out

    def fields(self, index: int) -> list[tuple[str, str]]:
        """The (lower-case name, value) header fields of the index-th recorded head."""
        lines = self.heads[index].decode("latin-1").split("\r\n")[1:]
        out = []
        for line in lines:
            name, _, value = line.partition(":")
            out.append((name.strip().lower(), value.strip()))
        return out

    def close(self) -> None:
        self.server.close()
