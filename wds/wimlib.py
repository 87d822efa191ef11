"""Thin wrapper around wimlib's command-line tool, ``wimlib-imagex``.

wds reads WIM headers, XML and uncompressed metadata itself (:mod:`wds.wim`); anything that needs a
decompressor (XPRESS, LZX, LZMS) is delegated to wimlib through this module. Every failure becomes a
:class:`~wds.errors.ToolError` with a one-line message; callers never see ``FileNotFoundError`` or
``CalledProcessError``.

Several engineers add functions here: add new ones, do not rewrite existing ones.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from wds.errors import ToolError

#: the executable wds delegates to; the ``wim*`` aliases are the same program
WIMLIB_IMAGEX = "wimlib-imagex"

#: how much of wimlib's stderr a ToolError quotes
_STDERR_QUOTE_CHARS = 400


def wimlib_available() -> bool:
    """True when ``wimlib-imagex`` is on ``PATH``."""
    return shutil.which(WIMLIB_IMAGEX) is not None


def _last_lines(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    joined = " / ".join(lines[-3:])
    return joined[:_STDERR_QUOTE_CHARS]


def run_wimlib(
    args: Sequence[str], *, check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``wimlib-imagex ARGS...`` and return the finished process (text output).

    Raises :class:`ToolError` when the tool is not installed, cannot be started, times out, or
    (with ``check``, the default) exits non-zero; the message quotes the command and the last
    lines wimlib printed on stderr.
    """
    exe = shutil.which(WIMLIB_IMAGEX)
    command = " ".join([WIMLIB_IMAGEX, *args])
    if exe is None:
        raise ToolError(
            f"{WIMLIB_IMAGEX} is not installed (needed for: {command}); "
            "install wimlib (Debian/Ubuntu: apt-get install wimtools)"
        )
    try:
        proc = subprocess.run(
            [exe, *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{command}: timed out after {exc.timeout:g} s") from None
    except OSError as exc:
        raise ToolError(f"{command}: cannot start {WIMLIB_IMAGEX}: {exc.strerror}") from None
    if check and proc.returncode != 0:
        detail = _last_lines(proc.stderr) or _last_lines(proc.stdout) or "no message"
        raise ToolError(f"{command}: {WIMLIB_IMAGEX} failed (exit {proc.returncode}): {detail}")
    return proc
