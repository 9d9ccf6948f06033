"""Two gRPC answers compared: their gRPC status and message (from the trailers, or a
trailers-only answer's headers), their other headers, and their messages decoded as protobuf
without a schema, compared as JSON bodies are."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from meshmirror import grpc
from meshmirror.outcomes.budget import Budget
from meshmirror.outcomes.compare_inputs import CompareSettings, Side
from meshmirror.outcomes.diff_rules import Rules
from meshmirror.outcomes.field_diff import compare_headers, json_diff

_GRPC_FIELDS = ("grpc-status", "grpc-message")


def is_grpc(side: Side) -> bool:
    return any(n.lower() == "content-type" and grpc.is_grpc(v) for n, v in side.headers)


def _grpc_field(side: Side, name: str) -> str | None:
    """`grpc-status` / `grpc-message` from the trailers, else from a trailers-only answer's
    headers."""
    for fields in (side.trailers, side.headers):
        for n, v in fields:
            if n.lower() == name:
                return v
    return None


def compare_grpc(
    primary: Side,
    shadow: Side,
    settings: CompareSettings,
    rules: Rules,
    fields: list[str],
    examples: dict[str, str],
    notes: list[str],
) -> None:
    """Two gRPC answers: their gRPC status and message, their other headers, and their messages
    decoded as protobuf without a schema, compared as JSON is (`body:/message/0/2/1` is field 1
    of field 2 of the first message; ignore pointers apply alike)."""
    ignore = (*settings.ignore_headers, *_GRPC_FIELDS)
    only_headers = dataclasses.replace(settings, ignore_headers=ignore)
    compare_headers(primary, shadow, only_headers, rules.budget, fields, examples)
    status_a = grpc.parse_status(_grpc_field(primary, "grpc-status") or "")
    status_b = grpc.parse_status(_grpc_field(shadow, "grpc-status") or "")
    if status_a != status_b:
        fields.append("grpc-status")
        examples["grpc-status"] = f"{_status_text(status_a)} != {_status_text(status_b)}"
    message_a = grpc.percent_decode((_grpc_field(primary, "grpc-message") or "").encode())
    message_b = grpc.percent_decode((_grpc_field(shadow, "grpc-message") or "").encode())
    if message_a != message_b:
        fields.append("grpc-message")
        examples["grpc-message"] = f"{json.dumps(message_a)} != {json.dumps(message_b)}"
    pa, pb = primary.body, shadow.body
    if pa is None or pb is None or primary.body_truncated or shadow.body_truncated:
        if pa != pb or primary.body_truncated or shadow.body_truncated:
            notes.append("messages not compared: a body is unavailable or only a prefix")
        return
    if pa == pb:
        return
    try:
        ma, mb = _grpc_messages(pa, rules.budget), _grpc_messages(pb, rules.budget)
    except grpc.FramingError as e:
        fields.append("body")
        examples["body"] = f"not gRPC messages: {e}"
        return
    diffs: list[tuple[str, str]] = []
    json_diff({"message": ma}, {"message": mb}, (), rules, diffs)
    for pointer, text in diffs:
        key = f"body:{pointer or '/'}"
        fields.append(key)
        examples[key] = text


def _grpc_messages(body: bytes, budget: Budget) -> list[Any]:
    """Each message of a gRPC body decoded as protobuf without a schema (a field that occurs
    once is its value, a repeated one a list), or as hex when it is not one (or compressed)."""
    out: list[Any] = []
    for compressed, payload in grpc.split_messages(body):
        budget.spend(1 + len(payload) // 16)
        if compressed:
            out.append("compressed:0x" + payload.hex())
            continue
        steps = [max(0, budget.left)]
        try:
            decoded = grpc.decode_protobuf(payload, budget=steps)
        except grpc.DecodeError:
            out.append("0x" + payload.hex())
            continue
        finally:
            budget.spend(max(0, budget.left - steps[0]))
        out.append(_singles(decoded))
    return out


def _singles(value: Any) -> Any:
    """decode_protobuf's lists of occurrences, with a field that occurs once as its value."""
    if isinstance(value, dict):
        return {k: _singles(v[0] if len(v) == 1 else v) for k, v in value.items()}
    if isinstance(value, list):
        return [_singles(v) for v in value]
    return value


def _status_text(code: int | None) -> str:
    return "none" if code is None else f"{code} ({grpc.status_label(code)})"
