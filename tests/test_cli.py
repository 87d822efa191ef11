"""The command line reads well and never shows a traceback for a user mistake."""

from __future__ import annotations

import argparse
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


def test_command_table_names_every_registered_command() -> None:
    """COMMAND_MODULES (the lazy loading of one command's module) lists exactly the top-level
    commands the modules register, each under the module that registers it."""
    import argparse
    import importlib

    from wds.cli.main import COMMAND_MODULES

    for module_name in set(COMMAND_MODULES.values()):
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module_name).register(sub)
        registered = set(sub.choices)
        assert registered == {c for c, m in COMMAND_MODULES.items() if m == module_name}


def test_command_word_is_found_after_global_options() -> None:
    from wds.cli.main import command_of

    assert command_of(["-v", "-v", "receive", "--help"]) == "receive"
    assert command_of(["--verbose", "image", "list"]) == "image"
    assert command_of(["--help"]) is None
    assert command_of(["frobnicate"]) is None
    assert command_of([]) is None


def test_one_command_loads_only_its_own_module() -> None:
    """`wds receive` (the deploy environment, eight receivers starting at once) does not import
    the image store, the WIM reader or the web client."""
    code = (
        "import sys\n"
        "from wds.cli.main import main\n"
        "try:\n"
        "    main(['receive', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('wds.store', 'wds.wim', "
        "'wds.web', 'aiohttp', 'rich')))\n"
        "print(heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_help_of_one_command_is_the_same_as_with_every_module_loaded() -> None:
    from wds.cli.main import build_parser

    full = build_parser()
    lazy = build_parser("receive")
    full_sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    lazy_sub = next(a for a in lazy._actions if isinstance(a, argparse._SubParsersAction))
    assert full_sub.choices["receive"].format_help() == lazy_sub.choices["receive"].format_help()
