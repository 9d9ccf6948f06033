"""The one RE2 setup: Envoy and Istio match and rewrite with RE2, so meshmirror does too.

Python's `re` accepts look-around and backreferences that RE2 rejects; a config that works here
must work on the mesh, so validation, matching and rewrites all compile through `compile_regex`.
"""

from __future__ import annotations

from typing import Any

import re2

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the C++ library would otherwise print to stderr


def compile_regex(pattern: str) -> Any:
    """Compile `pattern` with RE2. Raises `re2.error` for what RE2 rejects."""
    return re2.compile(pattern, options=_RE2_OPTIONS)
