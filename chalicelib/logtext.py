"""One rule for putting outside text into a log line: :func:`for_log`.

Channel and event names, user ids, webhook fields, error reasons built from input: anything a
client, a producer or a webhook supplies may hold a line break, which would start a forged log
line (CWE-117, "Improper Output Neutralization for Logs"), or other characters that mislead a
reader (bidirectional overrides, lone surrogates that a log handler cannot even encode). Every
such value goes through :func:`for_log` before it reaches a logger. Pure; no I/O.
"""
from __future__ import annotations

from typing import Any, Dict

#: longest logged value, characters (longer values are cut and marked)
MAX_LOGGED_CHARS = 200

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_table() -> Dict[int, str]:
    table: Dict[int, str] = {}
    # C0 controls, DEL, C1 controls (NEL U+0085 included)
    for code in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0)):
        table[code] = f"\\x{code:02x}"
    # line and paragraph separators, bidirectional embeddings, overrides and isolates
    for code in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                 0x200E, 0x200F, 0x061C, 0xFEFF):
        table[code] = f"\\u{code:04x}"
    for code in range(0xD800, 0xE000):  # lone surrogates (not encodable as UTF-8)
        table[code] = f"\\u{code:04x}"
    for char, escape in _NAMED.items():
        table[ord(char)] = escape
    return table


_TABLE = _escape_table()


def for_log(value: Any, limit: int = MAX_LOGGED_CHARS) -> str:
    """``value`` as text that stays on one log line and reads unambiguously.

    Args:
        value: any value; ``str`` is escaped, ``None``/``bool``/``int``/``float`` are written
            as ``str()`` gives them, anything else as ``str(value)`` escaped.
        limit: longest result before escaping, characters; a longer value is cut and
            ``…(+N chars)`` appended.
    Returns:
        the text with backslash, control characters (``\\n``, ``\\r``, ``\\t``, other C0/C1 as
        ``\\xNN``), Unicode line/paragraph separators, bidirectional controls and lone
        surrogates escaped Python-style; printable characters (non-ASCII letters included)
        unchanged.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    suffix = ""
    if len(text) > limit:
        text, suffix = text[:limit], f"…(+{len(text) - limit} chars)"
    if not (text.isprintable() and "\\" not in text):
        text = text.translate(_TABLE)
    return text + suffix
