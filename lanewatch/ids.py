"""Identifiers shared by the site inventory and the MQTT contract.

Ids appear verbatim in MQTT topics and InfluxDB tags, so they are restricted to characters that
are safe in both: no ``/``, ``+``, ``#``, spaces or upper case.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
ID_RULE = "1-64 lowercase letters, digits or '-', not starting or ending with '-'"

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
