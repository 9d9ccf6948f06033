"""Pydantic models of Istio's `Gateway` (networking.istio.io): servers, ports and their TLS.

Named apart from gateway_api.py, which holds the Kubernetes Gateway API's `Gateway` of the
same class name. Conventions come from base.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from meshmirror.config.base import Resource, Spec

# --- Gateway ------------------------------------------------------------------------------------


class GatewayPort(Spec):
    number: int = 0
    protocol: str = ""
    name: str = ""
    target_port: int | None = None


class ServerTLSSettings(Spec):
    https_redirect: bool | None = None
    mode: str | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] | None = None
    tls_certificates: list[dict[str, Any]] | None = None
    subject_alt_names: list[str] | None = None
    verify_certificate_spki: list[str] | None = None
    verify_certificate_hash: list[str] | None = None
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: list[str] | None = None


class Server(Spec):
    port: GatewayPort | None = None
    bind: str | None = None
    hosts: list[str] | None = None
    tls: ServerTLSSettings | None = None
    name: str | None = None
    default_endpoint: str | None = None


class GatewaySpec(Spec):
    servers: list[Server | None] | None = None
    selector: dict[str, str] | None = None


class Gateway(Resource):
    kind_name: ClassVar[str] = "Gateway"
    spec: GatewaySpec = Field(default_factory=GatewaySpec)
