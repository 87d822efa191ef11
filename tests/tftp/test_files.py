"""The file source policy, path normalisation, the shared mapping cache and netascii."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxe.tftp import files
from pxe.tftp.codec import ErrorCode
from pxe.tftp.files import (
    FileRefusal,
    RootFileSource,
    ServedFile,
    normalize_request_path,
    open_netascii,
    to_netascii,
)

CLIENT = ("192.0.2.1", 1000)


def served(result: ServedFile | FileRefusal) -> ServedFile:
    assert isinstance(result, ServedFile), result
    return result


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("Boot\\x64\\WdsNbp.com", ["Boot", "x64", "WdsNbp.com"]),
        ("/pxelinux.0", ["pxelinux.0"]),
        ("//a//b/", ["a", "b"]),
        ("./a/./b", ["a", "b"]),
        ("\\\\a", ["a"]),
    ],
)
def test_normalize(name: str, parts: list[str]) -> None:
    assert normalize_request_path(name) == parts


@pytest.mark.parametrize(
    "name", ["..", "a/../b", "a\\..\\b", "", "/", "x" * 1100, "a/" + "b" * 300]
)
def test_normalize_refuses(name: str) -> None:
    assert isinstance(normalize_request_path(name), FileRefusal)


def test_many_clients_share_one_mapping(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10000)
    source = RootFileSource(tmp_path)
    a = served(source.open("f", CLIENT))
    b = served(source.open("F", ("192.0.2.2", 1)))
    assert len(source.cache) == 1
    assert a.data.obj is b.data.obj  # the same mmap, not a copy
    a.close()
    assert len(source.cache) == 1 and bytes(b.data[:3]) == b"xxx"
    b.close()
    assert len(source.cache) == 0


def test_replaced_file_gets_a_new_mapping(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    source = RootFileSource(tmp_path)
    old = served(source.open("f", CLIENT))
    (tmp_path / "f.new").write_bytes(b"new!")
    os.replace(tmp_path / "f.new", tmp_path / "f")
    new = served(source.open("f", CLIENT))
    assert bytes(old.data) == b"old" and bytes(new.data) == b"new!"
    assert len(source.cache) == 2
    old.close()
    new.close()
    assert len(source.cache) == 0


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    f = served(RootFileSource(tmp_path).open("empty", CLIENT))
    assert f.size == 0
    f.close()


def test_unreadable_and_missing(tmp_path: Path) -> None:
    source = RootFileSource(tmp_path)
    missing = source.open("nope", CLIENT)
    assert isinstance(missing, FileRefusal) and missing.code == ErrorCode.FILE_NOT_FOUND
    (tmp_path / "d").mkdir()
    directory = source.open("d", CLIENT)
    assert isinstance(directory, FileRefusal) and directory.code == ErrorCode.ACCESS_VIOLATION


@given(st.binary(max_size=300))
def test_netascii_conversion(data: bytes) -> None:
    wire = to_netascii(data)
    assert len(wire) == len(data) + data.count(b"\n") + data.count(b"\r")
    # decoding NVT ASCII gives the original back
    decoded = wire.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")
    assert decoded == data


def test_netascii_form_is_shared_and_released(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes(b"a\nb\n")
    source = RootFileSource(tmp_path)
    a = open_netascii(served(source.open("t.txt", CLIENT)), source.cache)
    b = open_netascii(served(source.open("t.txt", CLIENT)), source.cache)
    a, b = served(a), served(b)
    assert bytes(a.data) == b"a\r\nb\r\n" and a.data.obj is b.data.obj
    assert len(source.cache) == 1  # only the derived form stays; the mapping was released
    a.close()
    b.close()
    assert len(source.cache) == 0


def test_netascii_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_NETASCII_BYTES", 10)
    (tmp_path / "big.txt").write_bytes(b"x" * 11)
    source = RootFileSource(tmp_path)
    refusal = open_netascii(served(source.open("big.txt", CLIENT)), source.cache)
    assert isinstance(refusal, FileRefusal) and "octet" in refusal.message
    assert len(source.cache) == 0


class PerMachineSource:
    """A policy like the PXE layer's: the file depends on who asks, not only on the name."""

    def __init__(self, files_by_client: dict[str, bytes]) -> None:
        self.files_by_client = files_by_client

    def open(self, path: str, client: tuple[str, int]) -> ServedFile | FileRefusal:
        data = self.files_by_client.get(client[0])
        if data is None or path != "boot.ipxe":
            return FileRefusal(ErrorCode.FILE_NOT_FOUND, "not for you")
        return ServedFile(path, data)


def test_server_uses_the_file_source_policy(tmp_path: Path) -> None:
    import asyncio

    from rawtftp import RawClient

    from pxe.tftp.server import TftpServer
    from wds.config import TftpConfig

    source = PerMachineSource({"127.0.0.2": b"machine two", "127.0.0.3": b"machine three"})

    async def main() -> list[bytes | None]:
        server = TftpServer(TftpConfig(address="0.0.0.0", port=0, root=tmp_path), source=source)
        _, port = await server.start()
        try:
            results = []
            for bind in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                with RawClient(bind=bind) as c:
                    r = await asyncio.to_thread(c.fetch, ("127.0.0.1", port), "boot.ipxe")
                results.append(r.data)
            return results
        finally:
            await server.stop()

    assert asyncio.run(main()) == [b"machine two", b"machine three", None]
