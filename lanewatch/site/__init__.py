"""The site inventory: zones, entrances, devices, signs and who receives what."""

from lanewatch.site.inventory import load_site
from lanewatch.site.model import CountingLine, Device, Entrance, Person, Sign, Site, Zone

__all__ = [
    "CountingLine",
    "Device",
    "Entrance",
    "Person",
    "Sign",
    "Site",
    "Zone",
    "load_site",
]
