"""Run a private Mosquitto broker and InfluxDB server on loopback, for the tests, the benchmarks and the local demo.

Each server gets a free 127.0.0.1 port and its own state folder, is waited for until it answers,
and is stopped by its PID (SIGTERM, then SIGKILL), so nothing is left behind and nothing clashes with
a system-wide install. The binaries come from Debian's ``mosquitto`` and ``influxdb`` packages.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from provisioning import binaries

if TYPE_CHECKING:
    from lanewatch.mqttconfig import BrokerConfig
    from lanewatch.site.model import Site
    from provisioning.brokerconfig import BrokerFiles

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A server is missing, did not start, or did not answer; the message says what to do."""


def find_binary(name: str) -> str:
    try:
        return binaries.find_binary(name)
    except binaries.MissingBinaryError as exc:
        raise ServiceError(str(exc)) from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A child server process with a state folder, a log file and a readiness check."""

    name = "server"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir / f"{self.name}.log"
        self.process: Optional[subprocess.Popen] = None
        self.host = "127.0.0.1"
        self.port = free_port()

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> _Server:
        command = self.command()
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode} at start; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if self.ready():
                log.info(
                    "started %s pid %d on %s:%d (state in %s)",
                    self.name,
                    self.pid,
                    self.host,
                    self.port,
                    self.state_dir,
                )
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"{self.name} did not answer on {self.host}:{self.port} within {timeout:.0f} s; "
            f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not go."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("stopped %s pid %d (exit code %s)", self.name, process.pid, process.returncode)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            log.info("killed %s pid %d", self.name, self.process.pid)
            self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Mosquitto(_Server):
    """A Mosquitto broker running the configuration a site gets: Debian's stock ``mosquitto.conf`` (persistence,
    a log file, ``include_dir``) with the ``lanewatch.conf`` that ``lanewatch site broker-config`` generated
    (``provisioning.brokerconfig``) in its ``conf.d``, and nothing friendlier: TLS, logins, ACLs, identities
    bound, the queue and packet limits. Clients log in with ``login(user)``."""

    name = "mosquitto"

    def __init__(self, state_dir: Path, files: BrokerFiles) -> None:
        super().__init__(state_dir)
        self.files = files
        self.port = files.port
        self.config_path = self.state_dir / "mosquitto.conf"

    @classmethod
    def for_site(cls, site: Site, state_dir: Path, outage_hours: float = 24.0) -> Mosquitto:
        """A broker for ``site`` on a free loopback port, its configuration generated into ``state_dir``."""
        from provisioning.brokerconfig import BrokerConfigError, generate

        try:
            files = generate(site, Path(state_dir) / "broker-config", port=free_port(), host="127.0.0.1",
                             outage_hours=outage_hours)  # fmt: skip
        except BrokerConfigError as exc:
            raise ServiceError(str(exc)) from None
        return cls(Path(state_dir) / "server", files)

    def login(self, user: str) -> BrokerConfig:
        """The ``broker:`` settings of a device, a person or the aggregator on this broker."""
        return self.files.login(user, host=self.host)

    def section(self, user: str, **overrides: object) -> dict[str, Any]:
        """``login(user)`` as the ``broker:`` section of a YAML config, with ``overrides``."""
        return {**self.login(user).model_dump(mode="json", exclude_none=True), **overrides}

    def command(self) -> list[str]:
        binary = find_binary("mosquitto")
        data_dir = self.state_dir / "data"
        data_dir.mkdir(exist_ok=True)
        lines = [
            "# As Debian's /etc/mosquitto/mosquitto.conf, with this server's own folders.",
            "persistence true",
            f"persistence_location {data_dir}/",
            f"log_dest file {self.log_path}",  # flushed line by line, unlike stdout into a file
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # Started by root, Mosquitto would switch to user 'mosquitto', who cannot enter a
            # private temp folder. A deployed broker runs under systemd as 'mosquitto'.
            *(["user root"] if os.geteuid() == 0 else []),
            f"include_dir {self.files.folder}",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return [binary, "-c", str(self.config_path)]

    def ready(self) -> bool:
        """TLS with client certificates: an open port is what can be checked without logging in."""
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"


class InfluxDB(_Server):
    """An InfluxDB 1.x server (Debian ships 1.6.7): v1 ``/write`` and InfluxQL ``/query``."""

    name = "influxd"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.rpc_port = free_port()
        self.config_path = self.state_dir / "influxdb.conf"

    def command(self) -> list[str]:
        binary = find_binary("influxd")
        d = self.state_dir
        self.config_path.write_text(f"""\
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
""")
        return [binary, "-config", str(self.config_path)]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        return _answers(f"{self.url}/ping", 204)

    def query(self, q: str, db: Optional[str] = None) -> dict:
        """Run InfluxQL through ``/query`` and return the decoded JSON (raises on an error)."""
        params = {"q": q, **({"db": db} if db else {})}
        request = urllib.request.Request(
            f"{self.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 for a bad query, with the reason in a JSON body
            body = json.loads(exc.read() or b"{}") or {"error": f"HTTP {exc.code}"}
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        if "error" in body or errors:
            raise ServiceError(f"InfluxQL {q!r} failed: {body.get('error') or errors[0]}")
        return body

    def write(self, db: str, lines: str) -> None:
        """Write line protocol through the v1 ``/write`` endpoint."""
        request = urllib.request.Request(
            f"{self.url}/write?db={urllib.parse.quote(db)}&precision=s", data=lines.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 204:
                raise ServiceError(f"InfluxDB /write answered {response.status}")


class VictoriaMetrics(_Server):
    """A server that takes InfluxDB 2.x writes (``/api/v2/write``): the tests' stand-in for InfluxDB 2.x/3.x.

    Debian has no InfluxDB 2.x; VictoriaMetrics (Debian's ``victoria-metrics``) accepts the same
    line protocol on the same endpoint, so ``influxdb-client`` writes to it unchanged. Points are read
    back through its export API (``measurement_field`` series with the tags as labels).
    """

    name = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            find_binary("victoria-metrics"),
            f"-storageDataPath={self.state_dir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
        ]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        return _answers(f"{self.url}/health", 200)

    def export(self, match: str) -> list[dict]:
        """Every readable series matching a selector, e.g. ``{__name__=~"counts_.*"}``.

        New rows become readable about a second after their write: poll until they are there.
        """
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def _answers(url: str, status: int) -> bool:
    """True when an HTTP server answers ``url`` with ``status``."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == status)
    except (OSError, urllib.error.URLError):
        return False
