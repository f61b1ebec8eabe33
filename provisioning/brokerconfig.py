"""The broker configuration a site runs, generated from the site inventory: who may connect, as whom, to
do what, and how much the broker holds for a consumer that is away.

- **Logins.** One user per device, service and person, each with a password and a client certificate
  from the site's CA (TLS 1.2+, certificates required). An ACL gives each the least it needs: a device
  publishes only under ``devices/<its id>/`` and reads only its own entrance's notices; the aggregator
  reads the devices and writes zone levels, notices, faults and its own status; the forwarder reads the
  zones' notices and writes whom they reach; grid officers and staff
  read the grids they are responsible for (and the grids inside them); technicians read device health,
  faults and dead letters; the control room reads everything.
- **Identities bound.** LaneWatch's identity plugin (``mosquitto_identity.c``, built here) refuses a
  client whose certificate is not issued to its username, or whose client id is neither its username
  nor ``<username>:<name>``: no login can take over another's session or use another's certificate.
- **Nothing dropped unseen.** ``max_qos 1``: a QoS 2 publish is refused (the client is disconnected and
  keeps the message), not dropped beyond the in-flight limit behind a normal acknowledgement. Packets
  over the contract's size are refused the same way. The queue the broker keeps for an absent consumer
  (the aggregator's persistent session) holds ``outage_hours`` of the site's traffic; Mosquitto's
  default of 1,000 messages would drop a few minutes' worth silently.
- **Persistence.** Sessions and queued messages are saved every ``AUTOSAVE_S`` and at a clean stop.

Output (``lanewatch site broker-config SITE FOLDER``): ``lanewatch.conf`` for Mosquitto's ``conf.d``,
``acl``, ``passwords`` (hashed by ``mosquitto_passwd``), ``lanewatch_identity.so``, ``secrets/<user>.password``
(mode 0600, to hand to each device or person, never to commit) and ``tls/`` (CA, broker and client
certificates). Passwords and keys already there are kept, so regenerating after an inventory edit
changes nothing for the devices already installed.
"""

from __future__ import annotations

import grp
import hashlib
import math
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site.model import Site
from provisioning.binaries import MissingBinaryError, find_binary
from provisioning.pki import CertificateAuthority

AGGREGATOR = "aggregator"
#: ``lanewatch alerts forward``: reads the notices, says whom they reach.
FORWARDER = "forwarder"
PLUGIN_SOURCE = Path(__file__).with_name("mosquitto_identity.c")
PLUGIN = "lanewatch_identity.so"
#: Measured with ``bench/broker_queue.py``: a queued count window or heartbeat (about 340 bytes of
#: JSON) costs Mosquitto 2.0 about 780 bytes of memory; rounded up.
QUEUED_MESSAGE_MEMORY = 800
#: The queue's payload budget per message: three times a real one, so that oversized (hostile)
#: payloads cannot make the queue cost more memory than stated.
QUEUED_PAYLOAD_BUDGET = 1024
#: A packet is its payload plus topic, header and properties: 1 KiB more than the contract allows.
MAX_PACKET_SIZE = contract.MAX_PAYLOAD_BYTES + 1024
#: Unacknowledged QoS 1 messages per client; the devices keep at most 100 in flight.
MAX_INFLIGHT = 100
AUTOSAVE_S = 300
#: A MQTT 3.1.1 client with a persistent session that never returns is forgotten after this.
CLIENT_EXPIRATION = "14d"


class BrokerConfigError(RuntimeError):
    """Something the generator needs is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class QueueBudget:
    """What the broker holds for an absent aggregator, and what that costs."""

    messages_per_hour: int
    outage_hours: float

    @property
    def messages(self) -> int:
        return math.ceil(self.messages_per_hour * self.outage_hours)

    @property
    def payload_bytes(self) -> int:
        return self.messages * QUEUED_PAYLOAD_BUDGET

    @property
    def memory_mb(self) -> int:
        return math.ceil(self.messages * QUEUED_MESSAGE_MEMORY / 1e6)

    def describe(self) -> str:
        return (
            f"the broker queues {self.messages:,} messages ({self.outage_hours:g} h of the site's "
            f"{self.messages_per_hour:,} per hour) for an aggregator that is away: about {self.memory_mb:,} MB "
            "of its memory when full"
        )


def queue_budget(site: Site, outage_hours: float) -> QueueBudget:
    """The site's device traffic per hour (a window per line every window, a heartbeat every 30 s)."""
    lines = sum(len(device.lines) for device in site.devices)
    per_hour = lines * 3600 / contract.DEFAULT_WINDOW_S + len(site.devices) * 3600 / contract.DEFAULT_HEARTBEAT_S
    return QueueBudget(math.ceil(per_hour), outage_hours)


@dataclass
class BrokerFiles:
    folder: Path
    host: str
    port: int
    config: Path
    acl: Path
    passwords: Path
    budget: QueueBudget
    users: list[str] = field(default_factory=list)

    def secret(self, user: str) -> str:
        return (self.folder / "secrets" / f"{user}.password").read_text().strip()

    def tls(self, user: str) -> tuple[Path, Path, Path]:
        """CA certificate, and the user's client certificate and key."""
        folder = self.folder / "tls"
        return folder / "ca.crt", folder / "clients" / f"{user}.crt", folder / "clients" / f"{user}.key"

    def login(self, user: str, host: Optional[str] = None) -> BrokerConfig:
        """The ``broker:`` section of ``user``'s configuration (a device, a person, or the aggregator)."""
        if user not in self.users:
            raise ValueError(
                f"no broker user {user!r}; the users are the site's devices, people, {AGGREGATOR} and {FORWARDER}"
            )
        ca, cert, key = self.tls(user)
        listening = self.host if self.host not in ("0.0.0.0", "::") else "localhost"
        return BrokerConfig(host=host or listening, port=self.port, username=user,
                            password_file=self.folder / "secrets" / f"{user}.password",
                            ca_file=ca, cert_file=cert, key_file=key)  # fmt: skip


def logins_beside(broker: BrokerConfig) -> Callable[[str], BrokerConfig]:
    """Every user's login on the broker that ``broker`` (one user's settings) reaches: the password and
    certificate files of the others lie beside its own, in the folder ``broker-config`` generated. On a
    broker without logins, everyone has the same settings."""
    if broker.username is None and broker.cert_file is None:
        return lambda _user: broker
    folder = Path(broker.cert_file).parents[2] if broker.cert_file is not None else None
    if folder is None or not (folder / "secrets").is_dir() or not (folder / "tls" / "clients").is_dir():
        raise ValueError(
            f"the other users' logins are not beside {broker.cert_file}: give the settings of a user from the "
            "folder `lanewatch site broker-config` wrote (its tls/clients/<user>.crt and secrets/<user>.password)"
        )

    def login(user: str) -> BrokerConfig:
        clients = folder / "tls" / "clients"
        return broker.model_copy(update={
            "username": user, "password_file": folder / "secrets" / f"{user}.password", "password_env": None,
            "cert_file": clients / f"{user}.crt", "key_file": clients / f"{user}.key",
        })  # fmt: skip

    return login


def acl_rules(site: Site) -> dict[str, list[str]]:
    """Each user's ACL lines (``topic read|write|readwrite FILTER``), least privilege."""
    root = f"lanewatch/v1/{site.site.id}"
    rules: dict[str, list[str]] = {
        AGGREGATOR: [
            f"topic read {root}/devices/#",
            f"topic write {root}/zones/#",
            f"topic write {root}/entrances/#",
            f"topic write {root}/faults/#",
            f"topic readwrite {root}/aggregator/#",
            f"topic read {root}/headcounts/#",
        ],
        FORWARDER: [
            f"topic read {root}/zones/+/notices",
            f"topic write {root}/people/+/reach",
            f"topic write {root}/forwarder/#",
        ],
    }
    for device in site.devices:
        rules[device.id] = [
            f"topic write {root}/devices/{device.id}/#",
            f"topic read {root}/entrances/{device.entrance}/notices",
        ]
    for person in site.people:
        if person.role == "control_room":
            rules[person.id] = [f"topic read {root}/#"]
        elif person.role == "technician":
            rules[person.id] = [
                f"topic read {root}/devices/+/heartbeat",
                f"topic read {root}/devices/+/availability",
                f"topic read {root}/faults/#",
                f"topic read {root}/aggregator/+/deadletter",
            ]
        else:
            zones = [z for z in site.zones if person.id == z.officer or person.id in z.staff]
            inside = [z.id for z in site.zones if any(site.contains(r.id, z.id) for r in zones)]
            rules[person.id] = [f"topic read {root}/zones/{zone}/#" for zone in sorted(inside)]
            # headcounts of their own third-level zones, under their own name only
            leaves = [zone for zone in sorted(inside) if not site.children(zone)]
            rules[person.id] += [f"topic write {root}/headcounts/{zone}/{person.id}" for zone in leaves]
    return rules


def generate(
    site: Site,
    folder: Path,
    port: int = 8883,
    host: str = "0.0.0.0",
    tls_hosts: tuple[str, ...] = (),
    outage_hours: float = 24.0,
) -> BrokerFiles:
    """Write the broker's configuration for ``site`` into ``folder`` (kept secrets are reused)."""
    if outage_hours <= 0:
        raise ValueError(f"outage_hours must be more than 0, got {outage_hours:g}")
    folder.mkdir(parents=True, exist_ok=True)
    plugin = build_plugin(folder)
    rules = acl_rules(site)
    acl = folder / "acl"
    acl.write_text(
        "# Generated by `lanewatch site broker-config` from the site inventory; edit the inventory instead.\n"
        + "".join(f"\nuser {user}\n" + "\n".join(lines) + "\n" for user, lines in rules.items())
    )
    passwords = _write_passwords(folder, list(rules))
    authority = CertificateAuthority(folder / "tls")
    server = authority.issue("broker", folder / "tls", server_hosts=tls_hosts or ("localhost", "127.0.0.1"))
    for user in rules:
        if not (folder / "tls" / "clients" / f"{user}.crt").exists():
            authority.issue(user, folder / "tls" / "clients")
    budget = queue_budget(site, outage_hours)
    config = folder / "lanewatch.conf"
    config.write_text(
        "# Generated by `lanewatch site broker-config` for the site "
        f"{site.site.id}; include it from Mosquitto's conf.d.\n"
        "# Logins: password, client certificate issued to the user, client id bound to the user.\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        "allow_zero_length_clientid false\n"
        f"password_file {passwords}\n"
        f"acl_file {acl}\n"
        f"plugin {plugin}\n"
        "# Nothing dropped behind an acknowledgement: QoS 2 and oversized packets are refused (the\n"
        "# client is disconnected and keeps the message); the queue for an absent aggregator holds\n"
        f"# {budget.outage_hours:g} h of the site's traffic, about {budget.memory_mb:,} MB of memory when full.\n"
        f"max_packet_size {MAX_PACKET_SIZE}\n"
        f"max_inflight_messages {MAX_INFLIGHT}\n"
        f"max_queued_messages {budget.messages}\n"
        f"max_queued_bytes {budget.payload_bytes}\n"
        f"persistent_client_expiration {CLIENT_EXPIRATION}\n"
        "persistence true\n"
        f"autosave_interval {AUTOSAVE_S}\n"
        "# Notices go out at once: small packets are not held back for the next one (Nagle's algorithm).\n"
        "set_tcp_nodelay true\n"
        f"listener {port} {host}\n"
        "max_qos 1\n"
        f"cafile {authority.cert_path}\n"
        f"certfile {server.cert}\n"
        f"keyfile {server.key}\n"
        "require_certificate true\n"
        "tls_version tlsv1.2\n"
    )
    _share_with_broker([passwords, acl, server.key])
    files = BrokerFiles(folder, host, port, config, acl, passwords, budget, list(rules))
    _write_logins(site, files, tls_hosts[0] if tls_hosts else None)
    return files


def _write_logins(site: Site, files: BrokerFiles, host: Optional[str]) -> None:
    """A folder per person, ready to hand over: logins/<person>/login.yaml with their password,
    certificate, key and the CA beside it (``lanewatch alerts watch --login logins/<person>/login.yaml``)."""
    ca = files.tls(AGGREGATOR)[0]
    for person in site.people:
        folder = files.folder / "logins" / person.id
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        _ca, cert, key = files.tls(person.id)
        secret = files.folder / "secrets" / f"{person.id}.password"
        for source, name in ((ca, "ca.crt"), (cert, f"{person.id}.crt"), (key, f"{person.id}.key"),
                             (secret, f"{person.id}.password")):  # fmt: skip
            target = folder / name
            target.write_bytes(source.read_bytes())
            target.chmod(0o600)
        login = files.login(person.id, host)
        zones = [z.id for z in site.zones if person.id == z.officer or person.id in z.staff]
        (folder / "login.yaml").write_text(
            f"# {person.name} ({person.id}): your login to the LaneWatch notices of {site.site.name.zh} "
            f"{site.site.name.en}.\n"
            f"# Your grids: {', '.join(zones) or 'none in the inventory yet'}. Keep this folder to yourself.\n"
            "#   lanewatch alerts watch --login login.yaml     # notices as they come, and whether they can\n"
            "#   lanewatch alerts state --login login.yaml     # every zone's level now\n"
            + (f"#   lanewatch alerts headcount {zones[-1]} N --login login.yaml   # you counted N people there\n"
               if zones else "")
            + "# Paths are relative to this file.\n"
            + yaml.safe_dump({"broker": {
                "host": login.host, "port": login.port, "username": person.id,
                "password_file": f"{person.id}.password", "ca_file": "ca.crt",
                "cert_file": f"{person.id}.crt", "key_file": f"{person.id}.key",
            }}, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )  # fmt: skip


def build_plugin(folder: Path) -> Path:
    """``folder/lanewatch_identity.so``, compiled from the packaged source unless already built from it."""
    source = PLUGIN_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    target, stamp = folder / PLUGIN, folder / f"{PLUGIN}.sha256"
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    missing = [header for header in ("mosquitto_broker.h", "openssl/x509.h") if not _header(header)]
    if compiler is None or missing:
        what = "a C compiler" if compiler is None else ", ".join(missing)
        raise BrokerConfigError(
            f"building LaneWatch's identity plugin for Mosquitto needs {what}: run "
            "`sudo apt-get install gcc mosquitto-dev libssl-dev` (or ./scripts/setup)"
        )
    built = subprocess.run(
        [compiler, "-std=c99", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(target), str(PLUGIN_SOURCE), "-lcrypto"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        raise BrokerConfigError(f"building the identity plugin failed:\n{built.stderr.strip()}")
    target.chmod(0o755)
    stamp.write_text(digest + "\n")
    return target


def _header(name: str) -> bool:
    return any((Path(folder) / name).is_file() for folder in ("/usr/include", "/usr/local/include"))


def _write_passwords(folder: Path, users: list[str]) -> Path:
    """The password file, hashed by ``mosquitto_passwd -U`` in one call (plain text never stays on disk)."""
    try:
        hasher = find_binary("mosquitto_passwd")
    except MissingBinaryError as exc:
        raise BrokerConfigError(str(exc)) from None
    passwords = folder / "passwords"
    plain = folder / ".passwords.new"
    descriptor = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.writelines(f"{user}:{_secret(folder, user)}\n" for user in users)
    try:
        subprocess.run([hasher, "-U", str(plain)], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        plain.unlink()
        raise BrokerConfigError(f"mosquitto_passwd failed: {exc.stderr.decode(errors='replace').strip()}") from None
    plain.replace(passwords)
    return passwords


def _secret(folder: Path, user: str) -> str:
    """The user's password: kept if it exists, else a new random one, written mode 0600."""
    path = folder / "secrets" / f"{user}.password"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    return value


def _share_with_broker(paths: list[Path]) -> None:
    """Mosquitto reads these after dropping to user ``mosquitto``: group-readable by its group."""
    try:
        gid = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return  # no such group here (not a Debian broker host): leave them to their owner
    for path in paths:
        if os.geteuid() == 0:
            os.chown(path, -1, gid)
        path.chmod(0o640)


def listening_port(folder: Path) -> int:
    """The port the broker generated into ``folder`` listens on (its ``lanewatch.conf``)."""
    config = folder / "lanewatch.conf"
    try:
        lines = config.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise BrokerConfigError(
            f"no broker configuration in {folder}: give the folder `lanewatch site broker-config` wrote"
        ) from None
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "listener":
            return int(words[1])
    raise BrokerConfigError(f"{config} has no listener line: generate it again with `lanewatch site broker-config`")


def rotate(folder: Path, user: str) -> None:
    """A new password and client certificate for ``user``; the old ones stop working once the broker
    rereads its password file (``systemctl reload mosquitto``, or SIGHUP)."""
    users = [line.split()[1] for line in (folder / "acl").read_text().splitlines() if line.startswith("user ")]
    if user not in users:
        raise BrokerConfigError(f"no broker user {user!r} in {folder}; add it to the inventory and run broker-config")
    (folder / "secrets" / f"{user}.password").unlink(missing_ok=True)
    _write_passwords(folder, users)
    CertificateAuthority(folder / "tls").issue(user, folder / "tls" / "clients")
    _share_with_broker([folder / "passwords"])
