"""Configuration input: pydantic models named after the Istio, Kubernetes and Gateway API types,
YAML documents with line positions, schema errors as located messages, kind dispatch, and the
loader (`config.loader`), which turns files into typed resources plus located messages."""
