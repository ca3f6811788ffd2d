"""The precomputed character classes in ``app/tasks/text_classes.py`` are what this Python's Unicode data says."""

from __future__ import annotations

import unicodedata

from app.tasks.text_classes import BLANK, SPACE, UNICODE_VERSION, compute


def test_the_stored_ranges_match_a_fresh_scan() -> None:
    space, blank = compute()
    assert (space, blank) == (SPACE, BLANK), "run: uv run python -m app.tasks.text_classes --write"
    assert unicodedata.unidata_version == UNICODE_VERSION


def test_every_white_space_character_is_blank() -> None:
    blank = {c for low, high in BLANK for c in range(low, high + 1)}
    assert all(c in blank for low, high in SPACE for c in range(low, high + 1))
    assert 0x200B in blank  # a zero-width space looks blank
    assert not "\u200b".isspace()  # but str.strip() keeps it
