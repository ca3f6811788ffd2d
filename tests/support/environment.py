"""The environment of a subprocess test: every declared setting cleared, so a developer's ``.env`` cannot leak in.

The names come from the one declaration of the settings (``config.settings.NAMES``): a setting added there is
cleared here without anyone remembering to. Empty means "unset" (the declared default), and a variable in the
environment, even an empty one, beats the ``.env`` file that ``manage.py`` reads from the project root.
"""

from __future__ import annotations

import os
from pathlib import Path

from config.settings import NAMES

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

UNSET_SETTINGS: dict[str, str] = dict.fromkeys(NAMES, "")


def clean_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment with every setting unset, ``DATA_DIR`` at ``data_dir``, then ``settings``."""
    return {**os.environ, **UNSET_SETTINGS, "DATA_DIR": str(data_dir), **settings}
