"""Security by construction: no secret in the repository, and no device payload that could carry a picture
or a position. (TLS and per-device ACLs on the real broker: tests/provisioning/test_broker_security.py; the demo runs
with them: tests/console/test_demo.py; the aggregator's inputs fuzzed: tests/aggregator/test_fuzz.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lanewatch import contract

ROOT = Path(__file__).resolve().parents[1]
DEVICE_KINDS = ("count", "heartbeat", "availability")
#: The longest free text a device may send (the detector model's name); a picture needs kilobytes.
MAX_DEVICE_TEXT = 64

SECRET_PATTERNS = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a Grafana service-account token": re.compile(r"\bglsa_[A-Za-z0-9_]{20,}"),
    "a password or token written into a config": re.compile(
        r"^\s*(password|token|secret)\s*:\s*['\"]?[^\s'\"#{$][^\s#]*", re.IGNORECASE | re.MULTILINE
    ),
    "an InfluxDB or MQTT URL with a password in it": re.compile(r"\b(?:https?|mqtts?)://[^/\s:@]+:[^/\s@]+@"),
}
SECRET_FILES = re.compile(r"(\.key|\.pem|\.p12|\.password|passwords|\.env)$")


def committed_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.fail(f"the secret scan needs the git checkout: {listed.stderr.strip()}")
    return [ROOT / name for name in listed.stdout.splitlines()]


def test_no_secret_is_committed() -> None:
    found = []
    for path in committed_files():
        if SECRET_FILES.search(path.name):
            found.append(f"{path.relative_to(ROOT)}: a secrets file")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # pictures; files deleted in the working tree
        for what, pattern in SECRET_PATTERNS.items():
            if path.suffix == ".py" and what.startswith("a password or token"):
                continue  # Python names such fields; the configs are what hold values
            for match in pattern.finditer(text):
                line = text[: match.start()].count("\n") + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not found, "\n".join(found)


def test_the_secret_scan_finds_what_it_looks_for() -> None:
    """The scan above would fail on each kind of secret (so a clean result means something)."""
    samples = {  # put together here, so that this file does not hold what it looks for
        "a private key": "-----BEGIN EC " + "PRIVATE KEY-----",
        "a Grafana service-account token": "GRAFANA_TOKEN=" + "glsa_" + "AbCdEfGhIjKlMnOpQrStUvWxYz_0123",
        "a password or token written into a config": "broker:\n  password: hunter2\n",
        "an InfluxDB or MQTT URL with a password in it": "url: http://admin:" + "s3cret@influx:8086",
    }
    for what, text in samples.items():
        assert SECRET_PATTERNS[what].search(text), what
    for safe in ("password_file: /etc/lanewatch/password", "password_env: LANEWATCH_PASSWORD", "token: ${TOKEN}"):
        assert not SECRET_PATTERNS["a password or token written into a config"].search(safe), safe


def _bounded(pattern: str) -> bool:
    """An anchored pattern without unbounded repetition (ids, boot ids): it fixes the text's length."""
    anchored = pattern.startswith("^") and pattern.endswith("$")
    return anchored and not re.search(r"(?<!\\)[*+]|\{\d+,\}", pattern)


def _walk(schema: dict[str, Any], definitions: dict[str, Any], where: str) -> list[str]:
    """Every way ``schema`` could hold an image or coordinates: open objects, arrays, long free text."""
    if "$ref" in schema:
        return _walk(definitions[schema["$ref"].split("/")[-1]], definitions, where)
    problems = []
    for option in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        problems += _walk(option, definitions, where)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if schema.get("additionalProperties", True) is not False:
            problems.append(f"{where}: an open object (any field could ride along)")
        for name, sub in schema.get("properties", {}).items():
            problems += _walk(sub, definitions, f"{where}.{name}")
    elif kind == "array":
        problems.append(f"{where}: an array (a list of coordinates or bytes)")
    elif kind == "string":
        bounded = "enum" in schema or "const" in schema or schema.get("format") == "date-time"
        bounded = bounded or schema.get("maxLength", 10**9) <= MAX_DEVICE_TEXT or _bounded(schema.get("pattern", ""))
        if not bounded:
            problems.append(f"{where}: a string of up to {schema.get('maxLength', 'unlimited')} characters")
    return problems


@pytest.mark.parametrize("kind", DEVICE_KINDS)
def test_no_device_payload_can_carry_image_data_or_coordinates(kind: str) -> None:
    """By the schema itself: closed objects, scalars only, no text longer than a model's name."""
    schema = contract.KINDS[kind].model.model_json_schema(by_alias=True)
    assert _walk(schema, schema.get("$defs", {}), kind) == []


def test_the_payload_check_would_catch_a_field_for_pictures_or_boxes() -> None:
    """The walk above finds each way a payload could smuggle data out."""
    closed = {"type": "object", "additionalProperties": False}
    cases = {
        "open": {"type": "object", "properties": {}},
        "boxes": {**closed, "properties": {"boxes": {"type": "array", "items": {"type": "number"}}}},
        "jpeg": {**closed, "properties": {"jpeg": {"type": "string", "maxLength": 30000}}},
        "base64": {**closed, "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9+/]+$"}}},
    }
    for name, schema in cases.items():
        assert _walk(schema, {}, name), name
