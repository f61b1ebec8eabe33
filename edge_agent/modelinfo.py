"""Which detector a device runs and under which licence, read from the model itself or beside it.

A site must know what its model's licence lets it do: the accurate YOLO models are AGPL-3.0, which
reaches the software that serves them; the SSD models of the TensorFlow detection zoo are Apache-2.0.
Read without the interpreter, so that the centre (which has none) can say it when it makes a bundle.

Where the licence comes from, first found wins:
1. ``model.yaml`` beside the model (``licence:``, ``source:``): what the site states; a bundle writes it;
2. the metadata Ultralytics exports put inside the ``.tflite`` (a zip appended to it) or beside it
   (``metadata.yaml``): their ``license:`` field;
3. otherwise unknown, with what the model's format suggests.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

SIDECAR = "model.yaml"
#: What a licence lets a site do with a model, by family (the first word of the licence, upper case).
ALLOWS = {
    "APACHE": "permissive: deploy and modify freely, keep the licence notice",
    "MIT": "permissive: deploy and modify freely, keep the licence notice",
    "BSD": "permissive: deploy and modify freely, keep the licence notice",
    "AGPL": "copyleft over a network: the whole program serving it (LaneWatch included) must be offered as "
    "source to its users, unless the site holds the model maker's commercial licence",
    "GPL": "copyleft: devices shipped with it carry the GPL's terms for the whole program",
}
#: Ultralytics' models (YOLOv5 7.0+, YOLOv8, YOLO11) are AGPL-3.0 unless bought under their Enterprise licence.
ULTRALYTICS = "AGPL-3.0 (Ultralytics' licence for its YOLO models, unless the site holds an Enterprise licence)"


@dataclass(frozen=True)
class ModelInfo:
    """A model file, its licence, what that allows, and where the licence was read."""

    file: str
    licence: str
    allows: str
    said_by: str
    description: str = ""

    @property
    def known(self) -> bool:
        return self.said_by != "nobody"

    def line(self) -> str:
        what = f"{self.licence} ({self.allows}; from {self.said_by})" if self.known else self.licence
        return f"{self.file}: licence {what}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_info(model: Path) -> ModelInfo:
    """The licence of ``model``, from ``model.yaml`` beside it, Ultralytics' metadata, or its format."""
    sidecar = model.with_name(SIDECAR)
    stated = _yaml_mapping(sidecar)
    if stated.get("licence") or stated.get("license"):
        licence = str(stated.get("licence") or stated.get("license"))
        return _info(model, licence, str(sidecar.name), str(stated.get("source", "")))
    ultralytics = _embedded_metadata(model) or _yaml_mapping(model.with_name("metadata.yaml"))
    if ultralytics.get("license"):
        said = "the model's own metadata" if _embedded_metadata(model) else "metadata.yaml"
        return _info(model, str(ultralytics["license"]), said, str(ultralytics.get("description", "")))
    guess = (
        "not stated: SSD models of the TensorFlow detection zoo are Apache-2.0; say so in model.yaml "
        "(`--model-licence` when making the bundle)"
        if _has_ssd_postprocess(model)
        else "not stated: ask whoever trained or exported it, then say so in model.yaml (`--model-licence`)"
    )
    return ModelInfo(model.name, guess, "unknown", "nobody")


def allows(licence: str) -> str:
    """What a licence lets a site do, from its family; unknown families say to read it."""
    head = licence.strip().split()[0].upper() if licence.strip() else ""
    for family, allowed in ALLOWS.items():
        if head.startswith(family):
            return allowed
    return "read the licence before deploying"


def sidecar_text(licence: str, source: str = "") -> str:
    """The ``model.yaml`` a bundle writes beside the model."""
    return yaml.safe_dump({"licence": licence, "source": source}, sort_keys=False, allow_unicode=True)


def _info(model: Path, licence: str, said_by: str, description: str) -> ModelInfo:
    return ModelInfo(model.name, licence, allows(licence), said_by, description)


def _yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _embedded_metadata(model: Path) -> Optional[dict[str, Any]]:
    """Ultralytics appends a zip holding its metadata (a Python dict literal) to the exported model."""
    try:
        with zipfile.ZipFile(model) as archive:
            for name in archive.namelist():
                if name.endswith(".txt"):
                    value = ast.literal_eval(archive.read(name).decode("utf-8", "replace"))
                    if isinstance(value, dict):
                        return value
    except (OSError, zipfile.BadZipFile, ValueError, SyntaxError):
        return None
    return None


def _has_ssd_postprocess(model: Path) -> bool:
    try:
        return b"TFLite_Detection_PostProcess" in model.read_bytes()
    except OSError:
        return False
