"""Config: typed, frozen, every key documented, every mistake named with file, key and value."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wds.config import Config, describe_keys, load_config, parse_config
from wds.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "wds.toml"


def test_shipped_config_is_the_defaults() -> None:
    config = load_config(SHIPPED)
    assert dataclasses.replace(config, source=None) == Config()


def test_shipped_config_documents_every_key_with_its_default() -> None:
    text = SHIPPED.read_text()
    sections: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^#?\s*\[\[?([a-z.]+)\]\]?\s*$", line)
        if m:
            current = m[1]
            continue
        m = re.match(r"^#?\s*([a-z_0-9]+)\s*=\s*(.*?)\s*(#.*)?$", line)
        if m and current:
            sections[f"{current}.{m[1]}"] = m[2]
    for key, default, doc in describe_keys():
        assert doc, f"{key} has no description in wds/config.py"
        assert key in sections, f"config/wds.toml does not document {key}"
        written = sections[key]
        if key.startswith("session."):
            continue  # the [[session]] block is an example with example values
        if default is None:
            expected = '""'
        elif isinstance(default, bool):
            expected = str(default).lower()
        elif isinstance(default, str | Path):
            expected = f'"{default}"'
        else:
            expected = repr(default)
        assert written == expected, f"{key}: wds.toml says {written}, default is {expected}"


def test_config_objects_are_frozen() -> None:
    config = parse_config("")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tftp.port = 1  # type: ignore[misc]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "wds.toml").write_text('[server]\nstore = "images"\n[tftp]\nroot = "/srv/t"\n')
    config = load_config(tmp_path / "wds.toml")
    assert config.server.store == tmp_path.resolve() / "images"
    assert config.tftp.root == Path("/srv/t")


def test_sessions_are_typed() -> None:
    config = parse_config(
        '[[session]]\nname = "lab"\nimage = "lab/win11:2"\nmode = "scheduled"\nmin_clients = 3\n'
        '[[session]]\nname = "lab2"\nimage = "lab/win10"\nrate_mbps = 100\n'
    )
    assert [s.name for s in config.session] == ["lab", "lab2"]
    assert config.session[0].min_clients == 3
    assert config.session[1].rate_mbps == 100.0


BAD = [
    ("[tftp]\nprot = 69\n", "tftp.prot", "unknown key 'prot'"),
    ("[tftp]\nport = 70000\n", "tftp.port", "70000"),
    ("[tftp]\nport = '69'\n", "tftp.port", "must be an integer, got '69'"),
    ("[tftp]\nenabled = 1\n", "tftp.enabled", "true or false"),
    ("[tftp]\nmax_blksize = 7\n", "tftp.max_blksize", "7"),
    ("[pxe]\nanswer = 'some'\n", "pxe.answer", "'some' is not one of"),
    ("[pxe.boot]\nbios = 3\n", "pxe.boot.bios", "must be a string"),
    ("[server]\naddress = '10.0.0.300'\n", "server.address", "IPv4"),
    ("[server]\ninterface = 'a very long interface'\n", "server.interface", "interface"),
    ("[multicast]\ngroup_pool = '10.0.0.0/24'\n", "multicast.group_pool", "224.0.0.0/4"),
    ("[multicast]\nport_pool = '9000-10'\n", "multicast.port_pool", "LOW-HIGH"),
    ("[multicast]\nchunk_size = 1000\n", "multicast.chunk_size", "power of two"),
    ("[http]\nport = -1\n", "http.port", "-1"),
    ("[bogus]\nx = 1\n", "bogus", "unknown key 'bogus'"),
    ("tftp = 3\n", "tftp", "must be a table"),
    ("[[session]]\nimage = 'a/b'\n", "session[0].name", "needs a name"),
    ("[[session]]\nname = 'a'\nimage = 'nogroup'\n", "session[0].image", "GROUP/NAME"),
    (
        "[[session]]\nname='a'\nimage='g/i'\n[[session]]\nname='a'\nimage='g/j'\n",
        "session[1].name",
        "used twice",
    ),
    ("[[session]]\nname='a'\nimage='g/i'\nmode='scheduled'\n", "session[0].mode", "needs"),
    (
        "[[session]]\nname='a'\nimage='g/i'\nstart_at='tomorrow'\n",
        "session[0].start_at",
        "ISO 8601",
    ),
    (
        "[[session]]\nname='a'\nimage='g/i'\ngroup='239.1.1.1'\nport=9000\n"
        "[[session]]\nname='b'\nimage='g/i'\ngroup='239.1.1.1'\nport=9000\n",
        "session[1].group",
        "also used by session 'a'",
    ),
    ("[tftp\n", "", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD)
def test_bad_config_names_file_key_and_value(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert f" {key}: " in message or not key
    assert fragment in message
    assert info.value.key == (key or None)


@pytest.mark.parametrize(("text", "key", "fragment"), BAD[:6])
def test_check_config_cli_exit_1_without_traceback(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert key in proc.stderr and fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_check_config_cli_ok_and_missing_file(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "check-config", str(SHIPPED)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "check-config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert "no such file" in missing.stderr and "Traceback" not in missing.stderr
