"""``lanewatch dashboards push``: put the generated boards into a Grafana through its HTTP API.

Through ``grafana-client`` (the maintained fork of ``grafana-api``). Idempotent: the folder is created
once (stable uid ``lanewatch``), every dashboard is saved by its stable uid with ``overwrite``, so a
second push updates the same dashboards (Grafana bumps their version) and never duplicates them.
The token (a service account's, role Editor) comes from the environment, never from a file.
"""

from __future__ import annotations

from typing import Any, Callable

from control_room.dashboards import build
from lanewatch import __version__
from lanewatch.site.model import Site

FOLDER_UID = "lanewatch"
FOLDER_TITLE = "LaneWatch"


class PushError(Exception):
    """Grafana refused or could not be reached; the message says what to do."""


def push(site: Site, url: str, token: str, say: Callable[[str], None] = lambda _t: None) -> list[dict[str, Any]]:
    """Save every dashboard in the LaneWatch folder; Grafana's answer for each."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=10.0)
    try:
        try:
            api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
            say(f"created the folder {FOLDER_TITLE!r}")
        answers = []
        for name, board in build(site).items():
            answer = api.dashboard.update_dashboard({
                "dashboard": {**board, "id": None}, "folderUid": FOLDER_UID, "overwrite": True,
                "message": f"lanewatch {__version__}: generated from the {site.site.id} inventory",
            })  # fmt: skip
            say(f"{name}: {answer.get('url', answer.get('uid'))} (version {answer.get('version')})")
            answers.append(answer)
        return answers
    except GrafanaException as exc:
        if exc.status_code in (401, 403):
            raise PushError(
                f"Grafana at {url} refused the token ({exc.status_code}): set GRAFANA_TOKEN to a service "
                "account token with the Editor role"
            ) from None
        if not exc.status_code:
            raise PushError(f"cannot reach Grafana at {url}: {exc.message}") from None
        raise PushError(f"Grafana at {url} answered {exc.status_code}: {exc.message}") from None
    except OSError as exc:  # connection refused, DNS: niquests' connection errors are OSErrors
        raise PushError(f"cannot reach Grafana at {url}: {exc}") from None
