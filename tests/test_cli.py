"""The `meshmirror` command through real subprocesses: exit codes and output as a user sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SEED_A = CONFIGS / "seed" / "cluster-a"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshmirror", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_every_shipped_config_validates_clean() -> None:
    r = run("validate", str(CONFIGS))
    assert r.returncode == 0, r.stdout + r.stderr
    sets = [line for line in r.stdout.splitlines() if ": OK: " in line]
    # every directory under configs/ that holds YAML is its own set, and each is OK
    expected = {p.parent for p in CONFIGS.rglob("*.yaml")}
    assert len(sets) == len(expected) >= 5
    assert "warning:" not in r.stdout
    assert "INVALID" not in r.stdout


def test_routes_json_shows_the_seed_step4_mirror_policy() -> None:
    r = run("routes", str(SEED_A), "--format", "json")
    assert r.returncode == 0, r.stderr
    dump = json.loads(r.stdout)
    route = dump["virtual_hosts"][0]["routes"][0]
    assert route["match"] == {"prefix": "/headers", "case_sensitive": True}
    assert route["route"]["cluster"] == "outbound|8000|v1|httpbin.default.svc.cluster.local"
    assert route["route"]["request_mirror_policies"] == [
        {
            "cluster": "outbound|80||httpbin.mirror.cluster-b",
            "runtime_fraction": {"default_value": {"numerator": 500000, "denominator": "MILLION"}},
            "trace_sampled": False,
        }
    ]


def test_routes_table_names_endpoints() -> None:
    r = run("routes", str(SEED_A))
    assert r.returncode == 0, r.stderr
    assert (
        "outbound|80||httpbin.mirror.cluster-b 50% (500000/MILLION)  [127.0.0.1:28081]" in r.stdout
    )


def test_explain_names_rule_primary_and_shadow_host() -> None:
    r = run("explain", str(SEED_A), "--request", "GET http://httpbin:8000/headers")
    assert r.returncode == 0, r.stderr
    assert "matched: default/httpbin[0]" in r.stdout
    assert (
        "primary: outbound|8000|v1|httpbin.default.svc.cluster.local -> 127.0.0.1:28080" in r.stdout
    )
    assert "copy carries Host: httpbin-shadow:8000" in r.stdout


def test_explain_unmatched_path_says_why() -> None:
    r = run("explain", str(SEED_A), "--request", "GET http://httpbin/ip")
    assert r.returncode == 0
    assert "no route matched" in r.stdout
    assert "/headers" in r.stdout  # the failed condition is shown


def test_several_mistakes_are_all_reported_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: app, namespace: shop}
spec:
  hosts: [app]
  http:
  - route:
    - destination: {host: app, port: {number: 70000}}
    mirror: {host: shadow}
    mirrors:
    - destination: {host: other}
    mirrorPercentage: {value: 150}
  - route:
    - destination: {host: app}
    mirrorPercentag: {value: 1}
"""
    )
    r = run("validate", str(bad))
    assert r.returncode == 1
    out = r.stdout
    prefix = f"{bad}:"
    expected = [
        ("spec.http[0].route[0].destination.port.number", "70000"),
        ("spec.http[0]", "cannot contain both mirror and mirrors"),
        ("spec.http[0].mirrorPercentage.value", "150"),
        ("spec.http[1].mirrorPercentag", "did you mean 'mirrorPercentage'"),
    ]
    for path, text in expected:
        lines = [line for line in out.splitlines() if path in line and text in line]
        assert lines, (path, text, out)
        assert lines[0].startswith(prefix)
        assert "doc 1" in lines[0]
    assert "Traceback" not in out + r.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("validate", "/nonexistent/path.yaml"), 2),
        (("routes",), 2),
        (("explain", str(SEED_A), "--request", "nonsense"), 2),
        (("bogus",), 2),
    ],
    ids=["missing-path", "no-paths", "bad-request", "unknown-command"],
)
def test_usage_errors_exit_2(args: tuple[str, ...], code: int) -> None:
    r = run(*args)
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_broken_yaml_is_a_located_error_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x\n")
    r = run("validate", str(bad))
    assert r.returncode == 1
    assert f"{bad}:" in r.stdout and "YAML syntax error" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
