"""`wds tftp` as a process: startup line, a fetch, clean stop on SIGTERM/SIGINT, bad options."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rawtftp import RawClient

from wds.cli.main import main

WDS = [sys.executable, "-m", "wds.cli.main"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_startup_line_fetch_and_clean_stop(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello")
    proc = subprocess.Popen(
        [*WDS, "tftp", "--root", str(tmp_path), "--listen", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"wds tftp: serving {tmp_path} on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with RawClient() as c:
            assert c.fetch(("127.0.0.1", port), "hello.txt").data == b"hello"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_file_and_overrides(tmp_path: Path) -> None:
    from wds.cli.main import build_parser
    from wds.cli.tftp_cmd import tftp_config_from_args

    (tmp_path / "root").mkdir()
    cfg = tmp_path / "wds.toml"
    cfg.write_text('[tftp]\nroot = "root"\nmax_windowsize = 32\nport = 6969\n')
    args = build_parser().parse_args(["tftp", "--config", str(cfg), "--windowsize-max", "8"])
    config = tftp_config_from_args(args)
    assert config.root == tmp_path / "root"
    assert config.max_windowsize == 8 and config.port == 6969 and config.address == "0.0.0.0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port 70000"),
        (["--blksize-max", "4"], "--blksize-max 4"),
        (["--max-transfers", "0"], "--max-transfers 0"),
        (["--listen", "nowhere"], "--listen nowhere"),
    ],
)
def test_bad_options_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["tftp", "--root", str(tmp_path), *argv]) == 1
    assert message in capsys.readouterr().err


def test_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tftp", "--root", str(tmp_path / "nope"), "--port", "0"]) == 1
    assert "not a directory" in capsys.readouterr().err
