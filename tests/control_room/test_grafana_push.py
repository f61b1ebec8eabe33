"""`lanewatch dashboards push` against Grafana's documented HTTP API.

No Grafana server can be installed on this machine, so this is a small stand-in that answers the
documented requests the push makes (https://grafana.com/docs/grafana/latest/developers/http_api/):
``GET /api/folders/:uid``, ``POST /api/folders``, ``POST /api/dashboards/db`` with a service account
token as ``Authorization: Bearer``. It keeps the dashboards by uid as Grafana does, refuses a second
folder with the same uid, and refuses to replace a dashboard without ``overwrite``; the tests then
look at what it holds.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from control_room.dashboards import build
from control_room.grafana import FOLDER_UID, PushError, push
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, run_cli

SITE = load_site(EXAMPLE_SITE)
TOKEN = "glsa_test_token"


class Grafana(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), GrafanaHandler)
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "folderUid", "version"}
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class GrafanaHandler(BaseHTTPRequestHandler):
    server: Grafana

    def log_message(self, *_args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        self.server.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"message": "Unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.startswith("/api/folders/"):
            folder = self.server.folders.get(self.path.rsplit("/", 1)[1])
            self._answer(200, folder) if folder else self._answer(404, {"message": "folder not found"})
        else:
            self._answer(404, {"message": "Not found"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/folders":
            if body["uid"] in self.server.folders:
                self._answer(409, {"message": "a folder with the same uid already exists"})
                return
            folder = {"id": len(self.server.folders) + 1, "uid": body["uid"], "title": body["title"], "version": 1}
            self.server.folders[body["uid"]] = folder
            self._answer(200, folder)
        elif self.path == "/api/dashboards/db":
            board = body["dashboard"]
            if not board.get("title") or (board.get("id") is not None and board["uid"] not in self.server.dashboards):
                self._answer(400, {"message": "Dashboard title cannot be empty"})
                return
            if body.get("folderUid") not in self.server.folders:
                self._answer(400, {"message": "folder not found"})
                return
            old = self.server.dashboards.get(board["uid"])
            if old is not None and not body.get("overwrite"):
                self._answer(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
                return
            version = old["version"] + 1 if old else 1
            self.server.dashboards[board["uid"]] = {
                "dashboard": board,
                "folderUid": body["folderUid"],
                "version": version,
            }
            self._answer(200, {"id": len(self.server.dashboards), "uid": board["uid"], "status": "success",
                               "url": f"/d/{board['uid']}/lanewatch", "version": version})  # fmt: skip
        else:
            self._answer(404, {"message": "Not found"})


@pytest.fixture
def grafana() -> Iterator[Grafana]:
    server = Grafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_pushing_twice_leaves_one_copy_of_each_dashboard_updated(grafana: Grafana) -> None:
    push(SITE, grafana.url, TOKEN)
    push(SITE, grafana.url, TOKEN)
    boards = build(SITE)
    assert sorted(grafana.dashboards) == sorted(b["uid"] for b in boards.values())
    assert {d["version"] for d in grafana.dashboards.values()} == {2}  # updated in place, not duplicated
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {FOLDER_UID}
    assert list(grafana.folders) == [FOLDER_UID]
    assert grafana.requests.count(("POST", "/api/folders")) == 1
    stored = grafana.dashboards["lanewatch-zone"]["dashboard"]
    assert stored["panels"] == boards["zone.json"]["panels"]


def test_a_refused_token_says_what_token_is_needed(grafana: Grafana) -> None:
    with pytest.raises(PushError, match=r"refused the token \(401\).*GRAFANA_TOKEN.*Editor"):
        push(SITE, grafana.url, "wrong")
    assert grafana.dashboards == {}


def test_an_unreachable_grafana_is_named() -> None:
    with pytest.raises(PushError, match=re.escape("cannot reach Grafana at http://127.0.0.1:9")):
        push(SITE, "http://127.0.0.1:9", TOKEN)


def test_the_push_command_takes_the_token_from_the_environment(
    grafana: Grafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    result = run_cli("dashboards", "push", "--url", grafana.url)
    assert result.exit_code == 1
    assert "set GRAFANA_TOKEN" in result.output
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    result = run_cli("dashboards", "push", "--url", grafana.url)
    assert result.exit_code == 0, result.output
    assert "overview.json: /d/lanewatch-overview/lanewatch (version 1)" in result.output
    assert len(grafana.dashboards) == 4
