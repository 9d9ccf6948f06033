"""Tests for meshmirror.mirror.tls.ClientContexts: one context per (ca_file, insecure), the
verification each setting means, a broken ca_file remembered until clear().

Handshakes against real servers are in tests/mirror/test_writer.py (copies) and
tests/mitm/test_primary.py (the primary), which both take their contexts from here.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from meshmirror.mirror.failures import TLSConfigError
from meshmirror.mirror.tls import ClientContexts
from tests.mirror import test_writer

cert_files = test_writer.cert_files  # a self-signed CA for localhost and 127.0.0.1


def test_one_context_per_settings(cert_files: tuple[Path, Path]) -> None:
    contexts = ClientContexts()
    ca = str(cert_files[0])
    system = contexts.get(None, False)
    assert contexts.get(None, False) is system
    assert contexts.get(ca, False) is contexts.get(ca, False)
    assert len({id(contexts.get(a, b)) for a in (None, ca) for b in (False, True)}) == 4


@pytest.mark.parametrize("ca", [False, True], ids=["system-trust", "ca-file"])
def test_verification_unless_insecure(cert_files: tuple[Path, Path], ca: bool) -> None:
    contexts = ClientContexts()
    ca_file = str(cert_files[0]) if ca else None
    verified = contexts.get(ca_file, False)
    assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, True)
    insecure = contexts.get(ca_file, True)
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_NONE, False)


def test_ca_file_is_the_only_trust(cert_files: tuple[Path, Path]) -> None:
    trusted = ClientContexts().get(str(cert_files[0]), False).get_ca_certs()
    assert [dict(c["subject"][0])["commonName"] for c in trusted] == ["meshmirror-test"]


def test_broken_ca_file_is_remembered_until_clear(
    cert_files: tuple[Path, Path], tmp_path: Path
) -> None:
    contexts = ClientContexts()
    path = tmp_path / "ca.pem"
    with pytest.raises(TLSConfigError, match="cannot load ca_file"):
        contexts.get(str(path), False)
    path.write_bytes(cert_files[0].read_bytes())
    with pytest.raises(TLSConfigError, match="cannot load ca_file"):
        contexts.get(str(path), False)  # not read again
    contexts.clear()
    assert contexts.get(str(path), False).verify_mode == ssl.CERT_REQUIRED
