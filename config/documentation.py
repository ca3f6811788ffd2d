"""``.env.example`` and ``docs/settings.md``, rendered from the declared settings (``config/settings.py``).

    uv run python -m config.documentation --write

``tests/unit/test_settings_declared_once.py`` fails when a committed file differs from what this renders.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path

from config.settings import PROJECT_ROOT, SETTINGS, Setting

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
SETTINGS_PAGE = PROJECT_ROOT / "docs" / "settings.md"
_WIDTH = 110


def _groups() -> dict[str, list[Setting]]:
    groups: dict[str, list[Setting]] = {}
    for setting in SETTINGS:
        groups.setdefault(setting.group, []).append(setting)
    return groups


def render_env_example() -> str:
    """``.env.example``: every setting with its meaning as a comment and its default as the value."""
    lines = [
        "# todo-backend settings. Copy this file to .env and change what you need: every variable is optional,",
        "# and the values below are the defaults. Variables set in the environment win over this file.",
        "# Rendered from config/settings.py (uv run python -m config.documentation --write); docs/settings.md",
        "# has the same as tables.",
    ]
    for group, settings in _groups().items():
        lines += ["", f"# -- {group} " + "-" * (_WIDTH - len(group) - 6)]
        for setting in settings:
            meaning = setting.meaning.replace("`", "")
            lines += textwrap.wrap(meaning, _WIDTH - 2, initial_indent="# ", subsequent_indent="# ")
            lines.append(f"{setting.name}={setting.default}")
    return "\n".join(lines) + "\n"


def render_settings_page() -> str:
    """``docs/settings.md``: one table per group."""
    lines = [
        "# Settings",
        "",
        "Read from the environment and from a `.env` file in the project root (the environment wins); copy",
        "`.env.example` to start. Invalid values stop every command with one line each, e.g.",
        "`error: BETTER_AUTH_SECRET is required when APP_ENV=production`. Secrets are never repeated in those",
        "lines or in the log.",
        "",
        "This page is rendered from the one declaration of the settings, `config/settings.py`",
        "(`uv run python -m config.documentation --write`); a test fails when it falls behind.",
    ]
    for group, settings in _groups().items():
        lines += ["", f"## {group}", "", "| Variable | Default | Accepted | Meaning |", "|---|---|---|---|"]
        lines += [f"| `{s.name}` | {s.documented_default} | {s.accepted} | {s.meaning} |" for s in settings]
    lines += [
        "",
        "## Tests only",
        "",
        "| Variable | Default | Meaning |",
        "|---|---|---|",
        "| `TEST_POSTGRES_URL` | `postgresql://postgres@127.0.0.1:5432/postgres` | A server where the suite may "
        "create and drop its own database |",
        "| `TEST_REDIS_URL` | `redis://127.0.0.1:6379/0` | A Redis for the rate limit tests (keys under a prefix "
        "unique to the run, deleted afterwards) |",
        "| `PG_BIN` | the newest `/usr/lib/postgresql/*/bin` | PostgreSQL binaries for the TLS tests' throwaway "
        "cluster |",
    ]
    return "\n".join(lines) + "\n"


def rendered() -> dict[Path, str]:
    """Every file rendered from the settings, by path."""
    return {ENV_EXAMPLE: render_env_example(), SETTINGS_PAGE: render_settings_page()}


def main(argv: Sequence[str] | None = None) -> None:
    """Write (``--write``) or check the rendered files."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the files instead of checking them")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            stale.append(str(path.relative_to(PROJECT_ROOT)))
    if stale:
        raise SystemExit(f"out of date: {', '.join(stale)}; run: uv run python -m config.documentation --write")


if __name__ == "__main__":
    main()
