"""meshmirror: Istio-style traffic mirroring as a mitmproxy addon bundle."""

__version__ = "0.1.0"
