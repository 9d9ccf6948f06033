"""TLS client contexts for upstream connections, one per (ca_file, insecure_skip_verify).

`ClientContexts.get` serves both the mirror writer's pools and the primary's attempts:
- `ca_file` None verifies against the system trust store, otherwise against that PEM bundle only;
- `insecure_skip_verify` checks neither the certificate chain nor the host name;
- ALPN offers only http/1.1, the one protocol these connections speak.
SNI and the name checked are the caller's `server_hostname` at connect time, not part of a context.
An unloadable `ca_file` is a `TLSConfigError`, remembered like a context until `clear()`.
"""

from __future__ import annotations

import ssl

from meshmirror.mirror.failures import TLSConfigError, short_error


class ClientContexts:
    """A cache of client SSL contexts keyed by (ca_file, insecure_skip_verify)."""

    __slots__ = ("_contexts",)

    def __init__(self) -> None:
        self._contexts: dict[tuple[str | None, bool], ssl.SSLContext | TLSConfigError] = {}

    def get(self, ca_file: str | None, insecure_skip_verify: bool) -> ssl.SSLContext:
        """The shared context for these settings; raises TLSConfigError if ca_file cannot be
        loaded."""
        # Loading a trust store costs milliseconds, so one context serves every connection with
        # the same settings; a broken ca_file is remembered too, so a misconfiguration cannot
        # make every connection re-read it on the event loop.
        key = (ca_file, insecure_skip_verify)
        context = self._contexts.get(key)
        if context is None:
            try:
                context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ValueError) as exc:
                context = TLSConfigError(f"cannot load ca_file: {short_error(exc)}")
            else:
                if insecure_skip_verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["http/1.1"])
            self._contexts[key] = context
        if isinstance(context, TLSConfigError):
            # Without the old traceback: re-raising one instance would grow it on every raise.
            raise context.with_traceback(None)
        return context

    def clear(self) -> None:
        """Forget every context and every remembered error (a fixed ca_file is read again)."""
        self._contexts.clear()
