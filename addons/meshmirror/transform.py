"""What a route does to a request and its response: the one import path for the transform modules.

Everything here is compiled once at configure time and applied per request (pure). The code lives
in one module per concern; this module only re-exports it, so routes.py, table.py, primary.py and
the tests keep importing from `meshmirror.transform`:

    rewrites.py         header operations, host and path rewrites, in Envoy's
                        `finalizeRequestHeaders` order (the per-request hot path)
    local_answers.py    redirect Location and direct response body: the route answers itself
    fault_policy.py     fault injection: delay, then abort, sampled per request
    upstream_policy.py  route timeout and retries for the primary

The arrows point one way: rewrites -> local_answers -> transform; fault_policy -> transform;
upstream_policy -> transform. None of them imports this module.
"""

from __future__ import annotations

from meshmirror.fault_policy import FaultPolicy, compile_fault
from meshmirror.local_answers import (
    DirectResponsePolicy,
    RedirectPolicy,
    compile_direct_response,
    compile_redirect,
)
from meshmirror.percent import MILLION
from meshmirror.rewrites import (
    Header,
    HeaderOps,
    PathRewrite,
    apply_header_ops,
    compile_header_ops,
    compile_path_rewrite,
    rewrite_request,
    split_query,
)
from meshmirror.upstream_policy import (
    DEFAULT_RETRIABLE_CODES,
    DEFAULT_RETRY_ON,
    Failure,
    UpstreamPolicy,
    compile_upstream,
    parse_retry_on,
)

__all__ = [
    "DEFAULT_RETRIABLE_CODES",
    "DEFAULT_RETRY_ON",
    "MILLION",
    "DirectResponsePolicy",
    "Failure",
    "FaultPolicy",
    "Header",
    "HeaderOps",
    "PathRewrite",
    "RedirectPolicy",
    "UpstreamPolicy",
    "apply_header_ops",
    "compile_direct_response",
    "compile_fault",
    "compile_header_ops",
    "compile_path_rewrite",
    "compile_redirect",
    "compile_upstream",
    "parse_retry_on",
    "rewrite_request",
    "split_query",
]
