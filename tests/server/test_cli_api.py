"""``wds status|session|device`` on top of the admin API (an in-process WebService), and the
one-line errors: no server, refused token, the server's own 4xx reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from webapi_support import Running, running_service

from wds.cli.main import main

MAC = "52:54:00:18:00:01"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Running]:
    with running_service(tmp_path) as running:
        yield running


def wds(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_and_sessions(web: Running, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = wds(capsys, "status", "--server", web.admin)
    assert code == 0 and "sessions:    1 idle, 1 running" in out
    code, out, _ = wds(capsys, "status", "--server", web.admin, "--json")
    assert json.loads(out)["counts"]["sessions"] == {"running": 1, "idle": 1}
    code, out, _ = wds(capsys, "session", "list", "--server", web.admin)
    assert code == 0 and out.splitlines()[0].startswith("NAME")
    assert any(line.startswith("lab ") and "running" in line for line in out.splitlines())
    code, out, _ = wds(capsys, "session", "show", "lab", "--server", web.admin)
    assert code == 0 and "receivers:  1" in out
    receiver = next(line for line in out.splitlines() if "127.0.0.1" in line)
    assert "100.0 Mbit/s" in receiver and "3/10" in receiver and "4 s" in receiver
    assert wds(capsys, "session", "start", "idle", "--server", web.admin)[1] == "idle: running\n"
    assert wds(capsys, "session", "stop", "idle", "--server", web.admin)[1] == "idle: stopped\n"
    code, out, err = wds(capsys, "session", "stop", "idle", "--server", web.admin)
    assert code == 1 and err == "wds: error: session 'idle' is not running (stopped)\n"
    code, out, _ = wds(
        capsys,
        "session",
        "create",
        "new",
        "--image",
        "lab/win11:1",
        "--mode",
        "scheduled",
        "--min-clients",
        "2",
        "--server",
        web.admin,
    )
    assert code == 0 and out == "new: idle\n"
    code, _, err = wds(
        capsys, "session", "create", "bad", "--image", "lab/x", "--mode", "sometimes",
        "--server", web.admin,
    )  # fmt: skip
    assert code == 1 and "session.mode: 'sometimes' is not one of" in err
    code, _, err = wds(capsys, "session", "show", "nope", "--server", web.admin)
    assert code == 1 and err.count("\n") == 1 and "no session 'nope'" in err


def test_devices_through_the_api(web: Running, capsys: pytest.CaptureFixture[str]) -> None:
    server = ("--server", web.admin, "-v")
    code, out, err = wds(
        capsys, "-v", "device", "prestage", MAC, "--boot-file", "a.efi", *server[:2]
    )
    assert code == 0 and out == f"{MAC}: prestaged\n"
    assert "through the admin API" in err
    web.call(lambda: web.ctx.events.record("booted", "x64 UEFI: ipxe.efi", mac=MAC))
    code, out, _ = wds(capsys, "device", "show", MAC, *server[:2])
    assert "boot file:  a.efi" in out and "booted     x64 UEFI: ipxe.efi" in out
    assert wds(capsys, "device", "reject", MAC, *server[:2])[1] == f"{MAC}: rejected\n"
    assert wds(capsys, "device", "approve", MAC, *server[:2])[1] == f"{MAC}: approved\n"
    code, out, _ = wds(capsys, "device", "assign", MAC, "--session", "lab", *server[:2])
    assert out == f"{MAC}: approved\n"
    listed = json.loads(wds(capsys, "device", "list", "--json", *server[:2])[1])
    assert [(d["mac"], d["session"], d["boot_file"]) for d in listed] == [(MAC, "lab", "a.efi")]
    assert "approved" in wds(capsys, "device", "list", *server[:2])[1]
    code, _, err = wds(capsys, "device", "show", "52:54:00:18:00:99", *server[:2])
    assert code == 1 and "no device" in err and err.count("\n") == 1


def test_device_commands_fall_back_to_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "wds.toml"
    port = _closed_port()
    config.write_text(f'[server]\nstate_dir = "st"\n[http]\nadmin_port = {port}\n')
    code, out, err = wds(capsys, "-v", "device", "prestage", MAC, "--config", str(config))
    assert code == 0 and out == f"{MAC}: prestaged\n"
    assert "using the database directly" in err
    assert (tmp_path / "st" / "devices.sqlite3").is_file()
    code, out, _ = wds(capsys, "device", "show", MAC, "--config", str(config))
    assert "state:      prestaged" in out and "events:     none" in out
    # an explicit --server that does not answer is an error, not a silent fallback
    code, _, err = wds(capsys, "device", "list", "--server", f"127.0.0.1:{port}")
    assert code == 1
    assert err == (
        f"wds: error: no wds server answers at http://127.0.0.1:{port}: start it with "
        "`wds serve` or pass --server\n"
    )


def test_no_server_and_refused_token_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    code, _, err = wds(capsys, "status", "--server", f"http://127.0.0.1:{port}")
    assert code == 1 and err.startswith("wds: error: no wds server answers at") and err[-1] == "\n"
    assert err.count("\n") == 1
    with running_service(tmp_path, token="t0ken") as web:
        code, _, err = wds(capsys, "session", "list", "--server", web.admin)
        assert code == 1 and "refused no token" in err and "--token-file" in err
        wrong = tmp_path / "wrong.token"
        wrong.write_text("nope\n")
        code, _, err = wds(capsys, "status", "--server", web.admin, "--token-file", str(wrong))
        assert code == 1 and f"refused the token in {str(wrong)!r}" in err
        code, out, _ = wds(
            capsys, "status", "--server", web.admin, "--token-file", str(tmp_path / "admin.token")
        )
        assert code == 0 and "token required" in out
        missing = tmp_path / "missing.token"
        code, _, err = wds(capsys, "status", "--server", web.admin, "--token-file", str(missing))
        assert code == 1 and "cannot read the token file" in err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
