"""`meshmirror run`: mirror in one line, as `gor --input-raw :8080 --output-http URL` does.

    meshmirror run --primary http://127.0.0.1:8080 --mirror http://127.0.0.1:9090@50

writes the Istio YAML one would `kubectl apply` for that (a ServiceEntry per backend, a Gateway
and a VirtualService with its mirrors), then runs mitmdump (mitmweb with `--web`) in reverse
mode to the primary with the addon and that config, listening on 127.0.0.1. With `-f CONFIG...`
it runs existing YAML the same way, after validating it as the proxy would (errors: exit 1, no
proxy started). The config is written to a temporary directory that is removed at exit, unless
`--write-config DIR` keeps it (replacing only a file an earlier run wrote there, unless
`--force`). Ctrl-C (or SIGTERM, SIGHUP) stops the proxy cleanly (it drains the copies in
flight); the exit code is mitmdump's.

Quiet by default: meshmirror's lines and warnings, without mitmproxy's per-connection and
per-flow lines (`--verbose` brings them back). Nothing it starts outlives it: the proxy gets
SIGTERM when `run` dies (Linux: PR_SET_PDEATHSIG), and a watchdog process (watchdog.py) stops
the proxy and removes the temporary directory when `run` ended without doing so, SIGKILL
included.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import meshmirror
from meshmirror.cli.watchdog import STOP_WAIT, Watchdog
from meshmirror.files import FileRefused, kind_of, read_regular, replace_file
from meshmirror.hosts import is_ip, split_host_port
from meshmirror.pipeline import load_config_set

GATEWAY_NAME = "meshmirror-run"
CONFIG_FILE = "meshmirror-run.yaml"
DEFAULT_LISTEN = "127.0.0.1:8000"
# mitmweb's default columns (mitmproxy 11 and 12), and the comment.
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")
# Signals that end `run` cleanly: passed on to the proxy, which drains its copies and exits.
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)
# The first line of every file `run` writes: how it knows a file it may replace.
HEADER = "# Written by `meshmirror run`: the same files run on a mesh with kubectl apply.\n"


class RunError(ValueError):
    """A bad `meshmirror run` argument; the message names it."""


@dataclass(frozen=True, slots=True)
class Backend:
    """A primary or mirror given as a URL: where the ServiceEntry's endpoint points."""

    scheme: str  # http | https | grpc (h2c) | grpcs (gRPC over TLS)
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme in ("https", "grpcs")

    @property
    def grpc(self) -> bool:
        return self.scheme in ("grpc", "grpcs")

    @property
    def url(self) -> str:
        """As mitmproxy's reverse mode takes it (gRPC as http/https)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)


def parse_backend(text: str, what: str) -> Backend:
    """`http://host:port`, `https://`, `grpc://` (gRPC in plain text, h2c) or `grpcs://` (gRPC
    over TLS); the port defaults to the scheme's. Anything else is a RunError."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https", "grpc", "grpcs"):
        raise RunError(f"{what} {text!r}: the scheme must be http, https, grpc or grpcs")
    if not parts.hostname:
        raise RunError(f"{what} {text!r}: no host (expected e.g. http://127.0.0.1:8080)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise RunError(f"{what} {text!r}: give scheme, host and port only, no path")
    try:
        port = parts.port or (443 if parts.scheme in ("https", "grpcs") else 80)
    except ValueError as e:
        raise RunError(f"{what} {text!r}: {e}") from None
    return Backend(parts.scheme, parts.hostname, port)


def parse_mirror(text: str) -> tuple[Backend, float | None]:
    """`URL` (every request) or `URL@PERCENT` (`@50`, `@12.5%`): a mirror and its share."""
    url, at, share = text.rpartition("@") if "@" in text.split("://", 1)[-1] else (text, "", "")
    if not at:
        return parse_backend(text, "--mirror"), None
    value = share.strip().removesuffix("%")
    try:
        percent = float(value)
    except ValueError:
        raise RunError(f"--mirror {text!r}: {share!r} is not a percentage") from None
    if not 0 <= percent <= 100:
        raise RunError(f"--mirror {text!r}: the percentage must be within 0-100")
    return parse_backend(url, "--mirror"), percent


def parse_listen(text: str) -> tuple[str, int]:
    address = split_host_port(text)
    if address is None:
        raise RunError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return address[0] or "127.0.0.1", address[1]


def _service_entry(name: str, host: str, backend: Backend) -> str:
    # gRPC: port protocol GRPC (reached over HTTP/2), and TLS originated by a DestinationRule.
    protocol = "GRPC" if backend.grpc else ("HTTPS" if backend.tls else "HTTP")
    pname = protocol.lower()
    resolution = "STATIC" if backend.is_ip else "DNS"
    tls = ""
    if backend.grpc and backend.tls:
        tls = f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
spec:
  host: {host}
  trafficPolicy:
    tls: {{mode: SIMPLE}}
"""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  ports:
  - {{number: 80, name: {pname}, protocol: {protocol}}}
  resolution: {resolution}
  endpoints:
  - address: "{backend.host}"
    ports: {{{pname}: {backend.port}}}
{tls}"""


def mesh_yaml(
    primary: Backend, mirrors: Sequence[tuple[Backend, float | None]], hosts: Sequence[str]
) -> str:
    """The config `meshmirror run` serves: what one would `kubectl apply` for the same setup."""
    host_list = ", ".join(f'"{h}"' for h in hosts)
    docs = [_service_entry("primary", "primary.meshmirror.local", primary)]
    mirror_lines = []
    for i, (backend, percent) in enumerate(mirrors, 1):
        name = f"mirror-{i}"
        docs.append(_service_entry(name, f"{name}.meshmirror.local", backend))
        line = f"    - destination: {{host: {name}.meshmirror.local}}"
        if percent is not None:
            line += f"\n      percentage: {{value: {percent:g}}}"
        mirror_lines.append(line)
    docs.append(
        f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: {GATEWAY_NAME}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [{host_list}]
"""
    )
    mirrors_block = ("\n    mirrors:\n" + "\n".join(mirror_lines)) if mirror_lines else ""
    docs.append(
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {GATEWAY_NAME}
spec:
  hosts: [{host_list}]
  gateways: [{GATEWAY_NAME}]
  http:
  - route:
    - destination: {{host: primary.meshmirror.local}}{mirrors_block}
"""
    )
    return HEADER + "---\n".join(docs)


def write_mesh_file(directory: str, text: str, force: bool) -> str:
    """Write `text` as DIRECTORY/meshmirror-run.yaml and return its path. A file there that an
    earlier `run` wrote (it starts with HEADER) is replaced; anything else (a file of the user's,
    a link, a FIFO) only with `force`, and then the new file replaces the link itself, never its
    target (`files.replace_file`). RunError when refused or when writing fails."""
    path = os.path.join(directory, CONFIG_FILE)
    try:
        os.makedirs(directory, exist_ok=True)
        refusal = _not_ours(path)
        if refusal and not force:
            raise RunError(
                f"--write-config {directory}: {path} {refusal}; give --force to replace it"
            )
        replace_file(path, text.encode("utf-8"))
    except OSError as e:
        raise RunError(f"--write-config {directory}: {path}: {e.strerror or e}") from None
    return path


def _not_ours(path: str) -> str | None:
    """Why the file at `path` is not one `run` wrote; None when there is none or it is one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return f"exists and is {kind_of(st.st_mode)}"
    try:
        head = read_regular(path, 1 << 20)[: len(HEADER)]
    except (OSError, FileRefused):
        head = b""
    if head != HEADER.encode("utf-8"):
        return "exists and was not written by meshmirror run"
    return None


def addon_path() -> Path:
    """The addon bundle's script inside the installed package (mitm/script.py)."""
    return Path(meshmirror.__file__).resolve().parent / "mitm" / "script.py"


def _sets(extra: Sequence[str], option: str) -> bool:
    """Whether the arguments for mitmdump set `option` (`--set option=...`)."""
    return any(a.startswith(f"{option}=") for a in extra)


def proxy_command(
    *,
    web: bool,
    primary: Backend,
    listen: tuple[str, int],
    configs: Sequence[str],
    extra: Sequence[str],
    verbose: bool = False,
) -> list[str]:
    tool = "mitmweb" if web else "mitmdump"
    beside = Path(sys.executable).with_name(tool)
    exe = str(beside) if beside.exists() else (shutil.which(tool) or tool)
    cmd = [
        exe,
        "--mode",
        f"reverse:{primary.url}",
        "--listen-host",
        listen[0],
        "-p",
        str(listen[1]),
        "-s",
        str(addon_path()),
    ]
    for c in configs:
        cmd += ["--set", f"mirror_config={c}"]
    if primary.grpc and not _sets(extra, "mirror_upstream_http2"):
        # The primary is the reverse-proxy upstream too: what no route claims reaches it over
        # HTTP/2 as well.
        cmd += ["--set", "mirror_upstream_http2=true"]
    # The addon's lines, not four lines per connection and one per flow (mitmproxy drops every
    # value of an option set twice, so a user's own setting after `--` replaces ours instead).
    if not verbose and not _sets(extra, "mirror_connection_log"):
        cmd += ["--set", "mirror_connection_log=false"]
    if not web and not verbose and not _sets(extra, "flow_detail"):
        cmd += ["--set", "flow_detail=0"]
    if web and not _sets(extra, "web_columns"):
        # mitmweb's columns plus the comment, where each original names the filter that lists
        # it with its copies and each copy its original (a list option: one --set per value).
        for column in WEB_COLUMNS:
            cmd += ["--set", f"web_columns={column}"]
    return cmd + list(extra)


def check_configs(configs: Sequence[str], extra: Sequence[str], port: int, err: TextIO) -> int:
    """Validate `-f` configs as the proxy will load them; print the errors (as `meshmirror
    validate` does) and return their number. Warnings are the proxy's to log."""
    gateway = next((a.split("=", 1)[1] for a in extra if a.startswith("mirror_gateway=")), "")
    cs = load_config_set(configs, gateway=gateway or None, listener_port=port)
    for d in cs.errors:
        print(d.format(), file=err)
    return len(cs.errors)


def run(
    *,
    primary: str,
    mirrors: Sequence[str],
    configs: Sequence[str],
    hosts: Sequence[str],
    listen: str,
    web: bool,
    write_config: str | None,
    extra: Sequence[str],
    out: TextIO,
    verbose: bool = False,
    err: TextIO = sys.stderr,
    force: bool = False,
) -> int:
    """Write the config (unless `configs` are given), run the proxy until it exits; its code.
    `force`: replace a config file `run` did not write (see `write_mesh_file`)."""
    target = parse_backend(primary, "--primary")
    where = parse_listen(listen)
    check_sources(configs, mirrors)
    if configs:
        errors = check_configs(configs, extra, where[1], err)
        if errors:
            print(
                f"meshmirror run: {errors} configuration error(s); the proxy was not started",
                file=err,
            )
            return 1
    temp: str | None = None
    if not configs:
        path, temp = write_run_config(target, mirrors, hosts, write_config, force, out)
        configs = [path]
    cmd = proxy_command(
        web=web, primary=target, listen=where, configs=configs, extra=extra, verbose=verbose
    )
    print(f"meshmirror run: {shlex.join(cmd)}", file=out, flush=True)
    return supervise(cmd, temp)


def check_sources(configs: Sequence[str], mirrors: Sequence[str]) -> None:
    """Exactly one of `--mirror` and `-f` is given; else a RunError."""
    if configs and mirrors:
        raise RunError("give either --mirror URL... or -f CONFIG..., not both")
    if not configs and not mirrors:
        raise RunError("nothing to mirror to: give --mirror URL[@PERCENT] or -f CONFIG...")


def write_run_config(
    primary: Backend,
    mirrors: Sequence[str],
    hosts: Sequence[str],
    write_config: str | None,
    force: bool,
    out: TextIO,
) -> tuple[str, str | None]:
    """Write the YAML for `--primary`/`--mirror` (to `write_config`, else to a new temporary
    directory) and say where; returns its path and the temporary directory (None when kept)."""
    parsed = [parse_mirror(m) for m in mirrors]
    directory = write_config or tempfile.mkdtemp(prefix="meshmirror-run-")
    temp = directory if write_config is None else None
    try:
        path = write_mesh_file(directory, mesh_yaml(primary, parsed, hosts or ["*"]), force)
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    kept = "kept" if temp is None else "removed at exit; --write-config DIR keeps it"
    print(f"meshmirror run: config written to {path} ({kept})", file=out)
    return path, temp


def _exit_with_parent() -> Callable[[], None] | None:
    """For Popen's preexec_fn on Linux: the child gets SIGTERM when this process dies, however
    it dies (PR_SET_PDEATHSIG). None elsewhere (the watchdog alone covers it there)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # this process died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def supervise(
    cmd: list[str],
    temp: str | None,
    *,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> int:
    """Run the proxy in the foreground; Ctrl-C (which the terminal sends it too), SIGTERM or
    SIGHUP to us lets it drain and exit, and its exit code is ours. The watchdog is told what
    to stop and remove should this process die without doing it.

    Our SIGHUP reaches the proxy as SIGTERM: neither mitmdump nor Envoy handles SIGHUP (mitmdump
    would die of it without draining, Envoy ignores it). A signal this process inherited as
    ignored (SIGHUP under `nohup`) stays ignored and is not passed on. `started`: called once
    with the process, right after it started (it must not block: the proxy is only waited for
    after it returns)."""
    watchdog = Watchdog()
    if temp is not None:
        watchdog.directory(temp)
    try:
        proc = subprocess.Popen(cmd, preexec_fn=_exit_with_parent())
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        watchdog.release()
        raise
    watchdog.process(proc.pid)

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {
        signum: signal.signal(signum, forward)
        for signum in _FORWARDED
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        if started is not None:
            started(proc)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                # The terminal sent SIGINT to mitmdump as well; tell it once more in case we
                # were signalled alone, then give it time to drain its copies.
                forward(signal.SIGINT, None)
                try:
                    return proc.wait(STOP_WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if proc.poll() is None:  # only an exception gets here with the proxy still up
            proc.kill()
            proc.wait()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        watchdog.release()
