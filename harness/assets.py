"""Where the shared models and footage are: never in the repository, never downloaded at run time.

Given explicitly (an option), else ``$LANEWATCH_ASSETS``, else ``../shared/assets`` beside the checkout
this code runs from (development), else ``../shared/assets`` from the current folder (an installed
wheel run from a checkout's folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

ENV = "LANEWATCH_ASSETS"
_CHECKOUT = Path(__file__).resolve().parents[1]


def assets_folder(explicit: Optional[Path] = None) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT.parent / "shared" / "assets"
    return Path("..") / "shared" / "assets"
