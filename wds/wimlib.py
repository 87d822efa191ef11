"""Thin wrapper around wimlib's command-line tool, ``wimlib-imagex``.

wds reads WIM headers, XML and uncompressed metadata itself (:mod:`wds.wim`); anything that needs a
decompressor (XPRESS, LZX, LZMS) is delegated to wimlib through this module. Every failure becomes a
:class:`~wds.errors.ToolError` with a one-line message; callers never see ``FileNotFoundError`` or
``CalledProcessError``.

Several engineers add functions here: add new ones, do not rewrite existing ones.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

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


# --------------------------------------------------------------------------------------------
# Writing WIMs (the image store). wds never compresses WIM data itself: every write below is one
# wimlib-imagex command. Paths are passed absolute so a name starting with '-' is never an option.

#: compression types wds offers for ``wimlib-imagex export --compress``
WIM_COMPRESSION_TYPES = ("none", "xpress", "lzx", "lzms")


def _abs(path: Path) -> str:
    return str(path.absolute())


def export_image(
    source: Path,
    image: int | None,
    dest: Path,
    *,
    compress: str | None = None,
    boot: bool = False,
    integrity: bool = True,
) -> None:
    """``wimlib-imagex export``: copy image ``image`` (None = all) of ``source`` to ``dest``.

    ``dest`` should not exist: wimlib then writes a new WIM holding only the data the exported
    images reference, which drops the space deleted images left behind (ImageX /export).
    ``boot`` marks the exported image bootable (with ``image=None``: keeps the source's boot
    index). ``integrity`` checks the source's integrity table and writes one into ``dest``.
    """
    if compress is not None and compress not in WIM_COMPRESSION_TYPES:
        raise ValueError(f"compression {compress!r} not in {WIM_COMPRESSION_TYPES}")
    args = ["export", _abs(source), "all" if image is None else str(image), _abs(dest)]
    if compress is not None:
        args.append(f"--compress={compress}")
    if boot:
        args.append("--boot")
    if integrity:
        args.append("--check")
    run_wimlib(args)


def split_wim(source: Path, dest: Path, part_size_mib: float, *, integrity: bool = True) -> None:
    """``wimlib-imagex split``: write ``dest`` (``NAME.swm``), ``NAME2.swm``, ... of at most
    ``part_size_mib`` MiB each (a part can be larger when one file's data does not fit)."""
    args = ["split", _abs(source), _abs(dest), f"{part_size_mib:g}"]
    if integrity:
        args.append("--check")
    run_wimlib(args)


def set_image_properties(
    wim: Path, image: int, properties: Mapping[str, str], *, integrity: bool = True
) -> None:
    """``wimlib-imagex info WIM IMAGE --image-property K=V``: set XML elements of one image,
    e.g. ``NAME``, ``DESCRIPTION``, ``FLAGS``; an empty value removes the element."""
    args = ["info", _abs(wim), str(image)]
    for key, value in properties.items():
        args += ["--image-property", f"{key}={value}"]
    if integrity:
        args.append("--include-integrity")
    run_wimlib(args)


def set_boot_index(wim: Path, image: int, *, integrity: bool = True) -> None:
    """``wimlib-imagex info WIM IMAGE --boot``: make ``image`` the bootable one (0 = none)."""
    args = ["info", _abs(wim), str(image), "--boot"]
    if integrity:
        args.append("--include-integrity")
    run_wimlib(args)


def optimize_wim(wim: Path, *, integrity: bool = True) -> None:
    """``wimlib-imagex optimize``: rebuild ``wim`` in place without unreferenced data."""
    args = ["optimize", _abs(wim)]
    if integrity:
        args.append("--check")
    run_wimlib(args)


def wimlib_verify(wim: Path, *, split: bool = False) -> str | None:
    """Run ``wimlib-imagex verify`` on a WIM (with its sibling parts when ``split``).

    Returns None when wimlib finds the WIM intact, else wimlib's one-line reason. Raises ToolError
    when the tool is missing or cannot run.
    """
    args = ["verify", str(wim)]
    if split:
        args.append(f"--ref={wim.with_name(glob.escape(wim.stem) + '*' + wim.suffix)}")
    proc = run_wimlib(args, check=False)
    if proc.returncode == 0:
        return None
    return _last_lines(proc.stderr) or _last_lines(proc.stdout) or f"exit {proc.returncode}"


def wimlib_dir(wim: Path, index: int) -> list[str]:
    """The paths of image ``index`` as ``wimlib-imagex dir`` lists them, one per entry."""
    proc = run_wimlib(["dir", str(wim), str(index)])
    return [line for line in proc.stdout.splitlines() if line]
