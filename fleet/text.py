"""Text no layer below can store: a NUL byte (PostgreSQL text cannot hold one; psycopg raises
ValueError) or an unpaired UTF-16 surrogate (not encodable as UTF-8)."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(text: str) -> str | None:
    """What makes `text` unstorable ("a NUL byte", "an unpaired surrogate"), or None."""
    if "\x00" in text:
        return "a NUL byte"
    if _SURROGATE.search(text):
        return "an unpaired surrogate"
    return None


def storable(text: str) -> str:
    """`text` with NUL bytes dropped and unpaired surrogates replaced by U+FFFD, for messages
    that quote what a peer sent (an OAuth error description, say)."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))
