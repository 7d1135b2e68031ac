"""One-line error messages, shared by the command line and the library modules.

Standard library only: :mod:`fusioncodec.cli` imports this at start-up, and library modules
(which must not import the CLI that sits on top of them) use it too.
"""

from __future__ import annotations

__all__ = ["error_reason", "one_line", "printable", "shown_path"]


def one_line(text: str) -> str:
    """First non-empty line of ``text`` (messages must stay on one line)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def error_reason(exc: BaseException) -> str:
    """Short description of an exception (OSError: just its strerror, the caller names the file)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(str(exc)) or type(exc).__name__


def shown_path(path: object) -> str:
    """A path as written in a message: as it is, or ``ascii()`` when it holds characters that
    would break the line (newlines, escapes)."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (newlines, NUL, ANSI escapes,
    bidirectional overrides) written as a Python escape; other characters kept."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
