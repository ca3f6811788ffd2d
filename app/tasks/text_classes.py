"""Which characters count as white space and which as blank, as code point ranges, computed once.

``app/tasks/schemas.py`` builds its JSON Schema patterns from these instead of scanning all 1,114,112 code
points at every import (a third of a second in every worker and every ``manage.py`` call). They are what
Python's own predicates say: ``SPACE`` is what ``str.isspace`` (so ``str.strip``) treats as white space,
``BLANK`` adds the format and control characters (zero-width spaces, direction marks) that make a title look
blank. ``tests/unit/test_text_classes.py`` recomputes both and fails when this Python's Unicode data differs;
then regenerate:

    uv run python -m app.tasks.text_classes --write
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path

UNICODE_VERSION = "14.0.0"
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})

Ranges = tuple[tuple[int, int], ...]

SPACE: Ranges = (
    (0x0009, 0x000D),
    (0x001C, 0x0020),
    (0x0085, 0x0085),
    (0x00A0, 0x00A0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)

BLANK: Ranges = (
    (0x0000, 0x0020),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)


def ranges_of(codepoints: Iterable[int]) -> Ranges:
    """Sorted, merged inclusive ranges of ``codepoints``."""
    merged: list[list[int]] = []
    for codepoint in sorted(codepoints):
        if merged and codepoint == merged[-1][1] + 1:
            merged[-1][1] = codepoint
        else:
            merged.append([codepoint, codepoint])
    return tuple((low, high) for low, high in merged)


def compute() -> tuple[Ranges, Ranges]:
    """``SPACE`` and ``BLANK`` as this Python's Unicode data has them (the slow scan)."""
    everything = range(sys.maxunicode + 1)
    space = ranges_of(c for c in everything if chr(c).isspace())
    blank = ranges_of(c for c in everything if chr(c).isspace() or unicodedata.category(chr(c)) in INVISIBLE_CATEGORIES)
    return space, blank


def main() -> None:
    """Print, or with ``--write`` rewrite, the ranges this module holds."""
    parser = argparse.ArgumentParser(description="Recompute SPACE and BLANK from this Python's Unicode data.")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    space, blank = compute()
    if (space, blank) == (SPACE, BLANK):
        print(f"up to date (Unicode {unicodedata.unidata_version})")
        return
    if not args.write:
        raise SystemExit("out of date: run with --write")
    source = Path(__file__).read_text()
    for name, value in (("SPACE", space), ("BLANK", blank)):
        start = source.index(f"{name}: Ranges = (")
        end = source.index("\n)\n", start) + 3
        items = ", ".join(f"(0x{a:04X}, 0x{b:04X})" for a, b in value)
        source = source[:start] + f"{name}: Ranges = (\n    {items},\n)\n" + source[end:]
    source = source.replace(
        f'UNICODE_VERSION = "{UNICODE_VERSION}"', f'UNICODE_VERSION = "{unicodedata.unidata_version}"'
    )
    Path(__file__).write_text(source)


if __name__ == "__main__":
    main()
