"""Writes to InfluxDB 1.x (v1 ``/write``) or 2.x/3.x (``influxdb-client``), reads in InfluxQL.

Errors are sorted by what the aggregator must do about them:
- ``UnavailableError`` (connection errors, timeouts, 5xx, 429): retry with backoff, spool meanwhile;
- ``RefusedError`` (401, 403, 404 ...): the configuration is wrong; retrying will not help until someone
  fixes it, so the message says what to fix, and the data waits in the spool;
- ``PointsRefusedError`` (400): the database will never take these points (e.g. a field type conflict);
  they are set aside in the spool's ``refused`` table rather than blocking everything behind them.

The v1 writer is a plain HTTP POST (``requests``): InfluxDB 1.6, which Debian ships, has no
``/api/v2/write``, and ``influxdb-client`` speaks only that. Reads go to ``/query`` (InfluxQL), which
1.x serves natively and 2.x/3.x through their v1 compatibility API.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import requests

from aggregator.config import InfluxConfig

log = logging.getLogger(__name__)


class DatabaseError(RuntimeError):
    pass


class UnavailableError(DatabaseError):
    """Try again later."""


class RefusedError(DatabaseError):
    """A configuration problem; the message says what to fix."""


class PointsRefusedError(DatabaseError):
    """These points can never be written."""


def _classify(status: int, body: str, config: InfluxConfig) -> DatabaseError:
    text = body.strip()[:300]
    target = f"database {config.database!r}" if config.api == "v1" else f"bucket {config.bucket!r} (org {config.org!r})"
    if status == 429 or status >= 500:
        return UnavailableError(f"InfluxDB at {config.url} answered {status}: {text}")
    if status == 400:
        return PointsRefusedError(f"InfluxDB refused the points (400): {text}")
    if status in (401, 403):
        what = "username/password" if config.api == "v1" else "token (token_env or token_file)"
        return RefusedError(f"InfluxDB refused the credentials ({status}: {text}); check influxdb.{what}")
    if status == 404:
        return RefusedError(f"InfluxDB has no {target} ({text}); create it or fix the influxdb section of the config")
    if status == 413:
        return RefusedError(f"InfluxDB says the batch is too large ({text}); lower influxdb.batch_size")
    return RefusedError(f"InfluxDB at {config.url} answered {status}: {text}")


class Database:
    """One InfluxDB, written in line protocol with nanosecond timestamps, read in InfluxQL."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self.url = config.url.rstrip("/")
        self.session = requests.Session()
        self._v2: Any = None
        if config.api == "v1":
            password = config.password()
            if config.username:
                self.session.auth = (config.username, password or "")
            self._params = {"db": config.database, "precision": "ns"}
        else:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            token = config.token()
            # retries=False: the aggregator decides when to retry and when to spool.
            self._v2_client = InfluxDBClient(
                url=self.url,
                token=token or "",
                org=config.org or "",
                timeout=int(config.timeout_s * 1000),
                retries=False,
            )
            self._v2 = self._v2_client.write_api(write_options=SYNCHRONOUS)
            if token:
                self.session.headers["Authorization"] = f"Token {token}"

    def prepare(self) -> None:
        """Create the v1 database if missing (idempotent); raises like ``write``."""
        if self.config.api == "v1":
            self.query(f'CREATE DATABASE "{self.config.database}"')

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode("utf-8")
        if self._v2 is not None:
            self._write_v2(body)
            return
        try:
            response = self.session.post(
                f"{self.url}/write", params=self._params, data=body, timeout=self.config.timeout_s
            )
        except requests.RequestException as exc:
            raise UnavailableError(f"InfluxDB at {self.url} is unreachable: {_short(exc)}") from None
        if response.status_code != 204:
            raise _classify(response.status_code, response.text, self.config)

    def _write_v2(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._v2.write(bucket=self.config.bucket, org=self.config.org, record=body)
        except ApiException as exc:
            raise _classify(int(exc.status or 0), str(exc.body or exc.reason), self.config) from None
        except (HTTPError, OSError) as exc:
            raise UnavailableError(f"InfluxDB at {self.url} is unreachable: {_short(exc)}") from None

    def query(self, q: str) -> list[dict[str, Any]]:
        """Run InfluxQL; every series as ``{"name", "tags", "columns", "values"}``."""
        database = self.config.database if self.config.api == "v1" else self.config.bucket
        try:
            response = self.session.post(
                f"{self.url}/query",
                params={"db": database, "epoch": "ns"},
                data={"q": q},
                timeout=self.config.timeout_s,
            )
        except requests.RequestException as exc:
            raise UnavailableError(f"InfluxDB at {self.url} is unreachable: {_short(exc)}") from None
        if response.status_code != 200:
            raise _classify(response.status_code, response.text, self.config)
        body = response.json()
        for result in body.get("results", []):
            if "error" in result:
                raise RefusedError(f"InfluxQL {q!r} failed: {result['error']}")
        return [series for result in body.get("results", []) for series in result.get("series", [])]

    def close(self) -> None:
        self.session.close()
        if self._v2 is not None:
            self._v2_client.close()


def rows(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A series' values as dicts keyed by column."""
    return [dict(zip(series["columns"], values)) for values in series.get("values", [])]


def _short(exc: BaseException) -> str:
    text = str(exc)
    reason: Optional[str] = None
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if marker in text:
            reason = marker
    return reason or text[:200]
