"""Phone channels on loopback, speaking what the real ones speak: a WeChat Work group robot, a DingTalk robot
(with its signature checked), an SMS gateway and a webhook (HMAC checked), for the forwarder's tests and
the demo. Each can be told to fail (HTTP 500), be slow, or answer "too many" (429, or the robot's code).

    with PhoneChannels(secrets_dir) as phones:   # secrets written there, one file each
        phones.mode["sms"] = "fail"
        ... phones.received("wecom")  # the messages each one accepted
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Optional

Mode = Literal["ok", "fail", "slow", "busy"]
KINDS = ("wecom", "dingtalk", "sms", "webhook")
PATHS = {"wecom": "/cgi-bin/webhook/send", "dingtalk": "/robot/send", "sms": "/sms/v1/send", "webhook": "/hook"}
SECRETS = {"wecom": "wecom-key", "dingtalk": "dingtalk-token", "dingtalk_sign": "dingtalk-secret",
           "sms": "sms-token", "webhook": "webhook-secret"}  # fmt: skip


class PhoneChannels:
    """Four endpoints on one loopback server; ``mode`` per kind, ``received(kind)`` what each accepted."""

    def __init__(self, secrets_dir: Path, slow_s: float = 8.0) -> None:
        self.secrets_dir = secrets_dir
        secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = {name: f"{name}-{time.time_ns()}" for name in SECRETS}
        for name, value in self.secrets.items():
            path = secrets_dir / SECRETS[name]
            path.write_text(value + "\n", encoding="utf-8")
            path.chmod(0o600)
        self.mode: dict[str, Mode] = dict.fromkeys(KINDS, "ok")
        self.slow_s = slow_s
        self.attempts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._received: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self._keys: dict[str, set[str]] = {kind: set() for kind in KINDS}
        self.repeats: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="phones", daemon=True)

    def __enter__(self) -> PhoneChannels:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}{PATHS[kind]}"

    def channel(self, kind: str) -> dict[str, Any]:
        """The forwarder's configuration of this channel (its secrets' files are in ``secrets_dir``)."""
        files = {"wecom": {"key_file": SECRETS["wecom"]},
                 "dingtalk": {"key_file": SECRETS["dingtalk"], "secret_file": SECRETS["dingtalk_sign"]},
                 "sms": {"key_file": SECRETS["sms"]}, "webhook": {"secret_file": SECRETS["webhook"]}}[kind]  # fmt: skip
        return {"type": kind, "url": self.url(kind), "timeout_s": 2.0,
                **{name: str(self.secrets_dir / value) for name, value in files.items()}}  # fmt: skip

    def received(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received[kind])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        phones = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                kind = next((k for k, p in PATHS.items() if p == url.path), None)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if kind is None:
                    return self._answer(404, {"error": "no such endpoint"})
                with phones._lock:
                    phones.attempts[kind] += 1
                mode = phones.mode[kind]
                if mode == "slow":
                    time.sleep(phones.slow_s)
                if mode == "fail":
                    return self._answer(500, {"error": "gateway down"})
                refused = phones._check(kind, dict(urllib.parse.parse_qsl(url.query)), self.headers, body)
                if refused:
                    return self._answer(*refused)
                if mode == "busy":
                    if kind == "wecom":
                        return self._answer(200, {"errcode": 45009, "errmsg": "api freq out of limit"})
                    if kind == "dingtalk":
                        return self._answer(200, {"errcode": 130101, "errmsg": "send too fast"})
                    return self._answer(429, {"error": "too many requests"}, {"Retry-After": "1"})
                with phones._lock:
                    # a gateway that honours idempotency keys takes a repeat (a send whose answer was lost) once
                    key = self.headers.get("Idempotency-Key") or json.loads(body).get("id")
                    if kind in ("sms", "webhook") and key in phones._keys[kind]:
                        phones.repeats[kind] += 1
                    else:
                        phones._keys[kind].add(key)
                        phones._received[kind].append(json.loads(body))
                if kind in ("wecom", "dingtalk"):
                    return self._answer(200, {"errcode": 0, "errmsg": "ok"})
                return self._answer(200, {"ok": True})

            def _answer(self, status: int, payload: dict, headers: Optional[dict[str, str]] = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _check(self, kind: str, query: dict[str, str], headers: Message, body: bytes) -> Optional[tuple[int, dict]]:
        """Refuse what the real endpoint would: a wrong key or token, a bad signature, a malformed body."""
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"errcode": 40001, "errmsg": "invalid json"}
        if kind == "wecom":
            if query.get("key") != self.secrets["wecom"]:
                return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
            if payload.get("msgtype") != "text" or not payload.get("text", {}).get("content"):
                return 200, {"errcode": 40008, "errmsg": "invalid message type"}
        elif kind == "dingtalk":
            secret = self.secrets["dingtalk_sign"]
            stamp = query.get("timestamp", "")
            digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
            if query.get("access_token") != self.secrets["dingtalk"]:
                return 200, {"errcode": 300001, "errmsg": "token is not exist"}
            fresh = stamp.isdigit() and abs(time.time() * 1000 - int(stamp)) < 3.6e6  # within an hour, as DingTalk
            if query.get("sign") != base64.b64encode(digest).decode() or not fresh:
                return 200, {"errcode": 310000, "errmsg": "sign not match"}
            if payload.get("msgtype") != "text":
                return 200, {"errcode": 40035, "errmsg": "missing msgtype"}
        elif kind == "sms":
            if headers.get("Authorization") != f"Bearer {self.secrets['sms']}":
                return 401, {"error": "unauthorized"}
            if not payload.get("to") or not payload.get("text"):
                return 400, {"error": "to and text are required"}
        else:
            expected = hmac.new(self.secrets["webhook"].encode(), body, hashlib.sha256).hexdigest()
            if headers.get("X-LaneWatch-Signature") != f"sha256={expected}":
                return 401, {"error": "bad signature"}
        return None
