"""The settings are declared once (``config/settings.SETTINGS``), and everything else follows from that list.

``.env.example`` and ``docs/settings.md`` are rendered from it; the environment of every subprocess test clears
every declared setting (so a developer's ``.env`` cannot leak into a test); ``Settings()``'s defaults are the
declared ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from config import documentation
from config.settings import NAMES, PROJECT_ROOT, SETTINGS, Settings, SettingsError
from tests.support.environment import UNSET_SETTINGS, clean_env


@pytest.mark.parametrize("path", sorted(documentation.rendered()), ids=lambda path: str(path.name))
def test_the_committed_file_is_what_the_declaration_renders(path: Path) -> None:
    assert path.read_text() == documentation.rendered()[path], (
        f"{path.relative_to(PROJECT_ROOT)} is out of date: uv run python -m config.documentation --write"
    )


def test_every_declared_setting_is_in_both_files() -> None:
    env_example, settings_page = (documentation.rendered()[path] for path in sorted(documentation.rendered()))
    for name in NAMES:
        assert f"\n{name}=" in env_example
        assert f"| `{name}` |" in settings_page


def test_each_setting_is_declared_once() -> None:
    assert len(set(NAMES)) == len(NAMES) == len(SETTINGS)


def test_the_subprocess_environment_clears_every_declared_setting(tmp_path: Path) -> None:
    assert set(UNSET_SETTINGS) == set(NAMES)
    env = clean_env(tmp_path)
    assert {name: env[name] for name in NAMES} == {**dict.fromkeys(NAMES, ""), "DATA_DIR": str(tmp_path)}


def test_a_developers_env_file_cannot_leak_into_a_subprocess_test(tmp_path: Path) -> None:
    """``manage.py`` reads ``.env`` under the environment (the environment wins): with every setting in ``.env``
    set to nonsense, a test's environment still gives the defaults."""
    dotenv = dict.fromkeys(NAMES, "nonsense")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(dotenv)
    assert {line.split()[0].rstrip(":") for line in caught.value.problems} >= {"DB_POOL_SIZE", "DB_POOL_TIMEOUT"}
    leaked = {**dotenv, **clean_env(tmp_path)}  # the order Settings.from_env merges .env and the environment
    assert Settings.from_env(leaked) == Settings.from_env({"DATA_DIR": str(tmp_path)})


def test_the_defaults_are_the_declared_ones() -> None:
    declared = Settings.from_env({})
    # The one computed default: an empty DATABASE_URL is the SQLite file in DATA_DIR.
    assert declared.database_url == f"sqlite:///{Settings().data_dir / 'todo.db'}"
    assert replace(Settings(), database_url=declared.database_url) == declared
