"""Free text from operators and tenants: what may be stored, and how it is shown.

A tenant's name ends up in terminals, tables and log files. A control character in
it can forge a log line (``\\n``), retitle or repaint the operator's terminal (ESC),
or reorder what is shown (the bidi overrides, U+202E). So such characters are
refused at input (``check_text``), and text read back from the database, which may
predate that check, is escaped wherever it is printed or logged (``printable``,
``EscapingFilter``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from botpoly_admin.errors import InvalidInput

# C0 controls and DEL, C1 controls, the bidi marks (ALM, LRM, RLM), embeddings and
# overrides (U+202A-U+202E), isolates (U+2066-U+2069), and the line and paragraph
# separators, which some terminals and editors break lines at.
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
# Patterns of the rarer paths, compiled on first use (``re`` caches them): each class
# costs a few hundred microseconds to compile, at every command's start-up otherwise.
_BEYOND_C0_CLASS = f"[{_BEYOND_C0}]"  # json escapes C0 itself
# The same but the line feed: a traceback's lines stay lines.
_UNSAFE_BUT_NEWLINE = f"[\x00-\x09\x0b-\x1f{_BEYOND_C0}]"
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """*text* with every unsafe character written as a visible escape (``\\x1b``,
    ``\\u202e``, ``\\n``): what is shown can neither move the cursor nor start a
    new line. Safe text comes back unchanged (the usual case costs one regex scan)."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def escape_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the unsafe
    characters json writes raw (DEL, C1, bidi, U+2028/2029) as ``\\uXXXX`` escapes:
    the same strings to a parser, nothing a terminal acts on. JSON has only ASCII
    outside its strings, so every match is inside one."""
    return re.sub(_BEYOND_C0_CLASS, lambda m: f"\\u{ord(m.group()):04x}", text)


def check_text(value: Any, what: str, max_length: int) -> str:
    """Return *value* as text with surrounding whitespace removed, or raise InvalidInput
    if it holds an unsafe character or is longer than *max_length* characters.

    The one check for every free-text field (names, emails, settings, notes). The
    message names the character by code point and never echoes the value, which is
    what could harm the terminal.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    match = _UNSAFE.search(value)
    if match is not None:
        raise InvalidInput(
            f"{what} contains a control character (U+{ord(match.group()):04X} at position "
            f"{match.start() + 1}); control, bidirectional-override and line-separator "
            "characters are not allowed"
        )
    text = value.strip()
    if len(text) > max_length:
        raise InvalidInput(f"{what} is longer than {max_length:,} characters ({len(text):,})")
    return text


class EscapingFilter(logging.Filter):
    """A handler filter that escapes unsafe characters in every record it lets through.

    A log line carries stored text (tenant names, errors quoting them); escaping it
    here, at the handler, covers every logger and every line, including rows stored
    before input was checked. The message is escaped whole (a ``\\n`` in it cannot
    start a forged line); a traceback keeps its line breaks and loses the rest.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Escape *record* in place; always True."""
        message = record.getMessage()
        escaped = printable(message)
        if escaped is not message:
            record.msg, record.args = escaped, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = re.sub(_UNSAFE_BUT_NEWLINE, _escape, record.exc_text)
        if record.stack_info:
            record.stack_info = re.sub(_UNSAFE_BUT_NEWLINE, _escape, record.stack_info)
        return True
