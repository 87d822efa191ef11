"""The command line reads well and never shows a traceback for a user mistake."""

from __future__ import annotations

import subprocess
import sys

import wds


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["wds", *args], capture_output=True, text=True, check=False)


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"wds {wds.__version__}"
    assert wds.__version__ != "0.0.0+unknown", "the package must be installed (pip install -e .)"


def test_help_lists_commands() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("check-config", "image"):
        assert command in proc.stdout
    assert "exit status" in proc.stdout


def test_no_command_prints_help_and_exits_2() -> None:
    proc = run()
    assert proc.returncode == 2
    assert "usage: wds" in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_module_entry_point_matches_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip() == f"wds {wds.__version__}"
