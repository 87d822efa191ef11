"""The README's two set-up commands are what CI runs, and they stay two commands."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block(marker: str) -> str:
    out = subprocess.run(
        [
            "awk",
            "-v",
            f"m=<!-- {marker} -->",
            "$0==m{f=1;next} f&&/^```/{if(s)exit;s=1;next} f&&s{print}",
            "README.md",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip()


def test_exactly_two_setup_commands_at_the_top() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", setup, re.S)
    assert len(blocks) == 2
    assert all(len(b.strip().splitlines()) == 1 for b in blocks), "each is one command line"
    assert README.index("## Set-up") < README.index("## What works")


def test_ci_runs_the_readme_commands() -> None:
    serve, test = _block("serve-command"), _block("test-command")
    assert serve.endswith("wds serve --config config/wds.toml")
    assert "pytest" in test and "apt-packages.txt" in test
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_block serve-command" in ci and "readme_block test-command" in ci


def test_apt_packages_exist_for_the_test_command() -> None:
    packages = (ROOT / ".ci" / "apt-packages.txt").read_text().split()
    for needed in ("python3-venv", "wimtools"):
        assert needed in packages
