"""Text in fixed-width tables: Chinese, Japanese and Korean characters take two terminal columns,
combining marks none, so tables of class names are padded by display width, not by `len`."""
from __future__ import annotations

import unicodedata


def char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """The terminal columns `text` takes (`len` for ASCII, two per wide CJK character)."""
    return sum(char_width(c) for c in text)


def fit(text: str, width: int, align: str = "<") -> str:
    """`text` cut to at most `width` columns and padded to exactly `width` (`<` left, `>` right)."""
    kept, used = [], 0
    for char in str(text):
        w = char_width(char)
        if used + w > width:
            break
        kept.append(char)
        used += w
    pad = " " * (width - used)
    return "".join(kept) + pad if align == "<" else pad + "".join(kept)
