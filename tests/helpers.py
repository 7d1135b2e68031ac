"""Assertions shared by the command-line tests (``from helpers import ...``).

pytest's default ``prepend`` import mode puts this folder (no ``__init__.py``) on ``sys.path``.
"""

from __future__ import annotations

from click.testing import Result


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_one_line_error(result: Result, *needles: str, code: int = 1, notes: bool = False) -> str:
    """Exit status ``code``, one ``fcodec: error:`` line on stderr, no traceback.

    With ``notes``, ``fcodec: note:`` lines may come before the error line.
    """
    assert result.exit_code == code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    if notes:
        lines = [line for line in lines if not line.startswith("fcodec: note: ")]
    assert len(lines) == 1 and lines[0].startswith("fcodec: error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
