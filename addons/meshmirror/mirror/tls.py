"""TLS client contexts for upstream connections, one per set of settings.

`ClientContexts.get` serves both the mirror writer's pools and the primary's attempts:
- `ca_file` / `ca_path` None verify against the system trust store, otherwise against that PEM
  bundle and/or directory of hashed certificates;
- `insecure_skip_verify` checks neither the certificate chain nor the host name;
- `client_cert`, a PEM file holding a certificate and its key, is presented when asked;
- ALPN offers the protocols the connection may speak (`MirrorEndpoint.alpn`).
SNI and the name checked are the caller's `server_hostname` at connect time, not part of a context.
An unloadable file is a `TLSConfigError`, remembered like a context until `clear()`.
"""

from __future__ import annotations

import ssl

from meshmirror.mirror.failures import TLSConfigError, short_error
from meshmirror.mirror.types import MirrorEndpoint

_Key = tuple[str | None, str | None, bool, str | None, tuple[str, ...]]


class ClientContexts:
    """A cache of client SSL contexts keyed by their settings."""

    __slots__ = ("_contexts",)

    def __init__(self) -> None:
        self._contexts: dict[_Key, ssl.SSLContext | TLSConfigError] = {}

    def for_endpoint(self, endpoint: MirrorEndpoint) -> ssl.SSLContext:
        return self.get(
            endpoint.ca_file,
            endpoint.insecure_skip_verify,
            ca_path=endpoint.ca_path,
            client_cert=endpoint.client_cert,
            alpn=endpoint.alpn,
        )

    def get(
        self,
        ca_file: str | None,
        insecure_skip_verify: bool,
        *,
        ca_path: str | None = None,
        client_cert: str | None = None,
        alpn: tuple[str, ...] = ("http/1.1",),
    ) -> ssl.SSLContext:
        """The shared context for these settings; raises TLSConfigError if a file cannot be
        loaded."""
        # Loading a trust store costs milliseconds, so one context serves every connection with
        # the same settings; a broken file is remembered too, so a misconfiguration cannot make
        # every connection re-read it on the event loop.
        key = (ca_file, ca_path, insecure_skip_verify, client_cert, alpn)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = _build(*key)
        if isinstance(context, TLSConfigError):
            # Without the old traceback: re-raising one instance would grow it on every raise.
            raise context.with_traceback(None)
        return context

    def clear(self) -> None:
        """Forget every context and every remembered error (a fixed file is read again)."""
        self._contexts.clear()


def _build(
    ca_file: str | None,
    ca_path: str | None,
    insecure_skip_verify: bool,
    client_cert: str | None,
    alpn: tuple[str, ...],
) -> ssl.SSLContext | TLSConfigError:
    try:
        context = ssl.create_default_context(cafile=ca_file, capath=ca_path)
    except (OSError, ValueError) as exc:
        what = "ca_file" if ca_path is None else "ca_file or ca_path"
        return TLSConfigError(f"cannot load {what}: {short_error(exc)}")
    if client_cert:
        try:
            context.load_cert_chain(client_cert)
        except (OSError, ValueError) as exc:
            return TLSConfigError(f"cannot load client_cert: {short_error(exc)}")
    if insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    return context
