"""Tier 3: the asyncio adapter on real sockets (127.0.0.1, port 0), with tftpy and a raw client."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import tftpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawtftp import RawClient, rrq
from tftp_server_thread import ServerThread

from pxe.tftp.codec import (
    TftpAck,
    TftpData,
    TftpError,
    TftpOptionAck,
    TftpWriteRequest,
    build_packet,
    parse_packet,
)
from pxe.tftp.netif import interface_mtu
from pxe.tftp.server import BUSY_POLL, BUSY_POLL_MISSES, TftpServer
from wds.config import TftpConfig

MakeServer = Callable[..., ServerThread]


def content(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def tftpy_get(server: ServerThread, name: str, dest: Path, options: dict[str, int]) -> None:
    """tftpy is blocking: run it in a thread, bounded by a join timeout."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client = tftpy.TftpClient("127.0.0.1", server.port, options=options)
            client.download(name, str(dest), timeout=2, retries=3)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "tftpy did not finish"
    if errors:
        raise errors[0]


@pytest.mark.parametrize(
    ("size", "options"),
    [(0, {}), (1000, {}), (512 * 3, {"tsize": 0}), (3 * 1024 * 1024 + 5, {"blksize": 1468})],
)
def test_tftpy_fetch(
    make_server: MakeServer, served_dir: Path, tmp_path: Path, size: int, options: dict[str, int]
) -> None:
    data = content(size)
    (served_dir / "file.bin").write_bytes(data)
    server = make_server()
    dest = tmp_path / "out.bin"
    tftpy_get(server, "file.bin", dest, options)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    server.wait_until(lambda s: s.active_transfers == 0 and len(s.cache) == 0)
    assert server.call(lambda: server.server.completed) == 1


@pytest.mark.parametrize(("gso", "busy_poll"), [(True, BUSY_POLL), (False, BUSY_POLL), (True, 0)])
def test_windowed_fetch_and_tsize(
    make_server: MakeServer, served_dir: Path, gso: bool, busy_poll: float
) -> None:
    data = content(1_000_003)
    (served_dir / "big.bin").write_bytes(data)
    server = make_server(gso=gso, busy_poll=busy_poll)
    with RawClient() as c:
        r = c.fetch(
            server.address,
            "big.bin",
            options=(("blksize", "1468"), ("windowsize", "16"), ("tsize", "0")),
        )
    assert r.oack == {"blksize": "1468", "windowsize": "16", "tsize": str(len(data))}
    assert r.data == data


def test_write_request_refused(make_server: MakeServer) -> None:
    server = make_server()
    with RawClient() as c:
        c.send(build_packet(TftpWriteRequest("upload.bin", "octet")), server.address)
        got = c.recv()
    assert got is not None
    error = parse_packet(got[0])
    assert isinstance(error, TftpError) and error.code == 2
    assert "read-only" in error.message
    assert got[1][1] != server.port  # errors come from a new TID, not the listening port


def test_tftpy_upload_is_refused(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server()
    src = tmp_path / "up.bin"
    src.write_bytes(b"x" * 100)
    client = tftpy.TftpClient("127.0.0.1", server.port)
    with pytest.raises(tftpy.TftpException):
        client.upload("up.bin", str(src), timeout=2, retries=1)


def test_unknown_mode_refused(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "a").write_bytes(b"a")
    server = make_server()
    with RawClient() as c:
        r = c.fetch(server.address, "a", mode="mail")
    assert r.error is not None and r.error.code == 4 and "mode" in r.error.message


def test_netascii(make_server: MakeServer, served_dir: Path) -> None:
    text = b"line one\nline two\r\nbare cr\r end\n"
    (served_dir / "readme.txt").write_bytes(text)
    server = make_server()
    with RawClient() as c:
        r = c.fetch(server.address, "readme.txt", mode="NetASCII", options=(("tsize", "0"),))
    wire = text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    assert r.data == wire
    assert r.oack == {"tsize": str(len(wire))}  # tsize reports the converted size


def test_case_insensitive_and_backslashes(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "Boot" / "x64").mkdir(parents=True)
    (served_dir / "Boot" / "x64" / "wdsnbp.com").write_bytes(b"nbp")
    server = make_server()
    for name in ("Boot\\x64\\WdsNbp.com", "\\boot\\X64\\WDSNBP.COM", "/boot/x64/wdsnbp.com"):
        with RawClient() as c:
            assert c.fetch(server.address, name).data == b"nbp", name


def test_case_sensitive_when_configured(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "File.bin").write_bytes(b"f")
    server = make_server(case_insensitive=False)
    with RawClient() as c:
        r = c.fetch(server.address, "file.bin")
    assert r.error is not None and r.error.code == 1


# ---------------------------------------------------------------------------------------------
# Nothing outside the root


SECRET = b"SECRET-OUTSIDE-THE-ROOT"

TRAVERSAL = [
    b"../secret.txt",
    b"..\\secret.txt",
    b"/../secret.txt",
    b"\\..\\secret.txt",
    b"sub/../../secret.txt",
    b"sub\\..\\..\\secret.txt",
    b"sub/..\\..\\secret.txt",
    b"./../secret.txt",
    b"sub/./../../secret.txt",
    b"..",
    b"../",
    b"../..",
    b"../../../../../../../../etc/passwd",
    b"%2e%2e/secret.txt",
    b"%2e%2e%2fsecret.txt",
    b"..%2fsecret.txt",
    b"..%5csecret.txt",
    b"....//secret.txt",
    b"..;/secret.txt",
    b"/etc/passwd",
    b"\\etc\\passwd",
    b"//etc/passwd",
    b"///etc//passwd",
    b"C:\\Windows\\win.ini",
    b"\\\\server\\share\\secret.txt",
    b"~/secret.txt",
    b"$HOME/secret.txt",
    "．．/secret.txt".encode(),  # full-width dots
    b"\xc0\xae\xc0\xae/secret.txt",  # overlong UTF-8 dots
    b"link_out",
    b"LINK_OUT",
    b"sub/../link_out",
    b"dirlink/secret.txt",
    b"abslink",
    b"devnull",
    b"chardev",
    b"fifo",
    b"sub",
    b"sub/",
    b".",
    b"/",
    b"",
    b"a" * 300,
    b"x/" * 400,
    b"a" * 2000,
    b"ok.txt/../../secret.txt",
    b"ok.txt\x00../secret.txt",
]


#: an overlong request, and a NUL that makes the rest of the name an option without a value
UNPARSEABLE = {b"a" * 2000, b"ok.txt\x00../secret.txt"}


@pytest.fixture
def hostile_root(served_dir: Path) -> Path:
    outside = served_dir.parent
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "secret.txt").chmod(0o644)
    (outside / "outdir").mkdir()
    (outside / "outdir" / "secret.txt").write_bytes(SECRET)
    (served_dir / "ok.txt").write_bytes(b"ok")
    (served_dir / "sub").mkdir()
    (served_dir / "sub" / "Nested.TXT").write_bytes(b"nested")
    (served_dir / "link_out").symlink_to("../secret.txt")
    (served_dir / "dirlink").symlink_to(outside / "outdir")
    (served_dir / "abslink").symlink_to(outside / "secret.txt")
    (served_dir / "devnull").symlink_to("/dev/null")
    (served_dir / "link_in").symlink_to("ok.txt")
    os.mkfifo(served_dir / "fifo")
    if os.geteuid() == 0:
        os.mknod(served_dir / "chardev", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    return served_dir


def test_traversal_corpus_serves_nothing_outside(
    make_server: MakeServer, hostile_root: Path
) -> None:
    assert len(TRAVERSAL) >= 30
    server = make_server()
    for name in TRAVERSAL:
        with RawClient(timeout=0.5) as c:
            r = c.fetch(server.address, name)
        assert r.data is None, name
        assert not any(isinstance(p, TftpData) for p in r.packets), name
        if name in UNPARSEABLE:  # dropped unanswered: not a valid request at all
            assert r.packets == [], name
        else:
            assert r.error is not None and r.error.code in (1, 2, 4), (name, r)
    server.wait_until(lambda s: s.active_transfers == 0 and len(s.cache) == 0)


def test_inside_names_still_work(make_server: MakeServer, hostile_root: Path) -> None:
    server = make_server()
    cases = {
        "ok.txt": b"ok",
        "/ok.txt": b"ok",
        "\\OK.TXT": b"ok",
        "sub\\nested.txt": b"nested",
        "sub/../ok.txt": None,  # '..' is refused even when it stays inside
        "link_in": b"ok",  # a symlink that stays inside is followed
    }
    for name, expected in cases.items():
        with RawClient() as c:
            assert c.fetch(server.address, name).data == expected, name


# ---------------------------------------------------------------------------------------------
# Transfer IDs and addresses


def test_wrong_tid_gets_error_5_and_transfer_completes(
    make_server: MakeServer, served_dir: Path
) -> None:
    data = content(512 * 5 + 1)
    (served_dir / "f").write_bytes(data)
    server = make_server()
    with RawClient() as c, RawClient() as intruder:
        c.send(rrq("f"), server.address)
        got = c.recv()
        assert got is not None
        first, tid = got
        assert parse_packet(first) == TftpData(1, data[:512])
        intruder.send(build_packet(TftpAck(1)), tid)
        reply = intruder.recv()
        assert reply is not None and reply[1] == tid
        error = parse_packet(reply[0])
        assert isinstance(error, TftpError) and error.code == 5
        received = bytearray(data[:512])
        for block in range(1, 7):
            c.send(build_packet(TftpAck(block)), tid)
            if block == 6:
                break
            got = c.recv()
            assert got is not None and got[1] == tid
            packet = parse_packet(got[0])
            assert isinstance(packet, TftpData) and packet.block == block + 1
            received += packet.payload
    assert bytes(received) == data
    server.wait_until(lambda s: s.active_transfers == 0 and s.completed == 1)


def test_reply_comes_from_the_address_the_request_was_sent_to(
    make_server: MakeServer, served_dir: Path
) -> None:
    (served_dir / "f").write_bytes(b"hello")
    server = make_server(address="0.0.0.0")
    for dest in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        with RawClient() as c:
            r = c.fetch((dest, server.port), "f")
        assert r.data == b"hello"
        assert r.server is not None and r.server[0] == dest and r.server[1] != server.port


def test_blksize_limited_by_interface_mtu(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "f").write_bytes(content(70000))
    server = make_server(address="0.0.0.0")
    mtu = interface_mtu(socket.if_nametoindex("lo"))
    assert mtu is not None
    with RawClient() as c:
        r = c.fetch(("127.0.0.1", server.port), "f", options=(("blksize", "65464"),))
    assert r.oack == {"blksize": str(min(65464, mtu - 32))}
    assert r.data == content(70000)


# ---------------------------------------------------------------------------------------------
# Admission, cleanup, PXE ROM habits


def start_hanging(server: ServerThread, name: str, bind: str = "127.0.0.1") -> RawClient:
    """A client that requests a file, reads the first DATA and then says nothing."""
    c = RawClient(bind=bind)
    c.send(rrq(name), server.address)
    got = c.recv()
    assert got is not None and isinstance(parse_packet(got[0]), TftpData)
    return c


def test_per_client_cap_queues_then_refuses(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "f").write_bytes(content(5000))
    server = make_server(
        max_transfers_per_client=1, max_queued=4, timeout=5.0, max_retries=2, max_queue_wait=30.0
    )
    first = start_hanging(server, "f")
    with RawClient() as queued, RawClient() as refused:
        queued.send(rrq("f"), server.address)
        server.wait_until(lambda s: s.queued_requests == 1)
        assert queued.recv(timeout=0.2) is None  # waiting, no answer yet
        refused.send(rrq("f"), server.address)
        reply = refused.recv()
        assert reply is not None
        error = parse_packet(reply[0])
        assert isinstance(error, TftpError) and "too many" in error.message
        # the first client aborts: the queued request starts
        server.wait_until(lambda s: s.active_transfers == 1)
        first.send(build_packet(TftpError(0, "bye")), _tid_of(server, first))
        got = queued.recv(timeout=5)
        assert got is not None and parse_packet(got[0]) == TftpData(1, content(5000)[:512])
    first.sock.close()


def _tid_of(server: ServerThread, client: RawClient) -> tuple[str, int]:
    def find() -> tuple[str, int]:
        session = server.server._sessions[client.address]
        host, port = session.sock.getsockname()
        return host, port

    return server.call(find)


def test_total_cap_round_robin_and_refusal(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "f").write_bytes(content(5000))
    server = make_server(max_transfers=2, max_queued=1, timeout=5.0, max_queue_wait=30.0)
    a = start_hanging(server, "f", bind="127.0.0.2")
    b = start_hanging(server, "f", bind="127.0.0.3")
    with RawClient(bind="127.0.0.4") as waiting, RawClient(bind="127.0.0.5") as refused:
        waiting.send(rrq("f"), server.address)
        server.wait_until(lambda s: s.queued_requests == 1)
        refused.send(rrq("f"), server.address)
        reply = refused.recv()
        assert reply is not None
        error = parse_packet(reply[0])
        assert isinstance(error, TftpError) and "busy" in error.message
        a.send(build_packet(TftpError(0, "bye")), _tid_of(server, a))
        got = waiting.recv(timeout=5)
        assert got is not None and isinstance(parse_packet(got[0]), TftpData)
    a.sock.close()
    b.sock.close()


def test_queued_request_expires_with_busy_error(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "f").write_bytes(content(5000))
    server = make_server(max_transfers=1, timeout=5.0, max_queue_wait=0.2)
    a = start_hanging(server, "f")
    with RawClient(bind="127.0.0.9") as waiting:
        waiting.send(rrq("f"), server.address)
        got = waiting.recv(timeout=5)
        assert got is not None
        error = parse_packet(got[0])
        assert isinstance(error, TftpError) and "busy" in error.message
    server.wait_until(lambda s: s.queued_requests == 0)
    a.sock.close()


def test_vanished_client_is_cleaned_up(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "f").write_bytes(content(100_000))
    server = make_server(timeout=0.05, max_retries=3)
    c = start_hanging(server, "f")
    c.sock.close()
    server.wait_until(lambda s: s.active_transfers == 0 and len(s.cache) == 0, timeout=10)
    assert server.call(lambda: server.server.failed) == 1


def test_oack_refused_then_asked_again_is_quiet(
    make_server: MakeServer, served_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PXE ROMs: RRQ with tsize, ERROR 8 on the OACK, then the real RRQ. No warning for that."""
    data = content(3000)
    (served_dir / "pxelinux.0").write_bytes(data)
    server = make_server()
    caplog.set_level(logging.DEBUG, logger="pxe.tftp")
    with RawClient() as c:
        c.send(rrq("pxelinux.0", options=(("tsize", "0"), ("blksize", "1456"))), server.address)
        got = c.recv()
        assert got is not None
        assert parse_packet(got[0]) == TftpOptionAck((("tsize", "3000"), ("blksize", "1456")))
        c.send(build_packet(TftpError(8, "User aborted the transfer")), got[1])
        server.wait_until(lambda s: s.active_transfers == 0)
        r = c.fetch(server.address, "pxelinux.0", options=(("blksize", "1456"),))
    assert r.data == data
    server.wait_until(lambda s: s.completed == 1)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert any("declined" in rec.getMessage() for rec in caplog.records)
    assert any("fetched pxelinux.0" in rec.getMessage() for rec in caplog.records)


def test_different_request_from_same_port_replaces_the_running_one(
    make_server: MakeServer, served_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ROM that re-asks without tsize before its ERROR for the OACK got processed."""
    data = content(3000)
    (served_dir / "nbp").write_bytes(data)
    server = make_server(timeout=5.0)
    caplog.set_level(logging.DEBUG, logger="pxe.tftp")
    with RawClient() as c:
        c.send(rrq("nbp", options=(("tsize", "0"), ("blksize", "1456"))), server.address)
        first = c.recv()
        assert first is not None and isinstance(parse_packet(first[0]), TftpOptionAck)
        r = c.fetch(server.address, "nbp", options=(("blksize", "1456"),))
    assert r.data == data and r.server != first[1]
    server.wait_until(lambda s: s.active_transfers == 0 and s.completed == 1)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


def test_repeated_request_does_not_start_a_second_transfer(
    make_server: MakeServer, served_dir: Path
) -> None:
    (served_dir / "f").write_bytes(content(2000))
    server = make_server(timeout=5.0)
    with RawClient() as c:
        for _ in range(3):
            c.send(rrq("f"), server.address)
        server.wait_until(lambda s: s.active_transfers == 1)
        firsts = [c.recv(timeout=0.3) for _ in range(3)]
    assert sum(1 for f in firsts if f is not None) == 1
    server.wait_until(lambda s: s.active_transfers == 1)


# ---------------------------------------------------------------------------------------------
# Robustness


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([rrq("f"), rrq("f", options=(("windowsize", "4"),))]).flatmap(
                lambda base: st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)).map(
                    lambda m: base[: m[0]] + bytes([m[1]]) + base[m[0] + 1 :]
                )
            ),
            st.builds(lambda b: build_packet(TftpAck(b)), st.integers(0, 65535)),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_datagrams_never_crash_or_leak(
    fuzz_server: ServerThread, datagrams: list[bytes]
) -> None:
    with RawClient(timeout=0.3) as c:
        # to the listening port
        for d in datagrams:
            c.send(d, fuzz_server.address)
        # and into a running transfer, from its client and from a stranger
        with RawClient(timeout=1.0) as owner:
            owner.send(rrq("f", options=(("blksize", "8"),)), fuzz_server.address)
            got = owner.recv()
            assert got is not None
            for d in datagrams:
                owner.send(d, got[1])
                c.send(d, got[1])
            owner.send(build_packet(TftpError(0, "done")), got[1])
    fuzz_server.wait_until(lambda s: s.active_transfers == 0 and len(s.cache) == 0, timeout=10)
    with RawClient() as check:
        assert check.fetch(fuzz_server.address, "f").data == FUZZ_FILE


FUZZ_FILE = content(1500, seed=3)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    from wds.config import TftpConfig

    root = tmp_path_factory.mktemp("fuzzroot")
    (root / "f").write_bytes(FUZZ_FILE)
    server = ServerThread(
        TftpConfig(
            address="127.0.0.1", port=0, root=root, timeout=0.05, max_retries=2, min_timeout=0.01
        )
    )
    server.start()
    yield server
    server.stop()


def test_segmentation_offload_falls_back_to_single_datagrams() -> None:
    """A kernel or route that refuses UDP_SEGMENT: the group goes out datagram by datagram."""

    class RefusingSocket:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def sendmsg(self, *_args: object) -> int:
            raise OSError(errno.EIO, "no segmentation offload")

        def sendto(self, data: bytes, _addr: object) -> int:
            self.sent.append(data)
            return len(data)

    sock = RefusingSocket()
    session = SimpleNamespace(sock=sock, client=("127.0.0.1", 9), gso=True)
    iov: list[bytes | memoryview] = [b"\0\3\0\1", memoryview(b"aaaa"), b"\0\3\0\2", b"bb"]
    server = TftpServer(TftpConfig(port=0))
    server._send_group(session, iov, 8)  # type: ignore[arg-type]
    assert session.gso is False
    assert sock.sent == [b"\0\3\0\1aaaa", b"\0\3\0\2bb"]


def test_busy_poll_reads_a_quick_clients_answers(make_server: MakeServer, served_dir: Path) -> None:
    data = content(300 * 512 + 7)
    (served_dir / "f").write_bytes(data)
    server = make_server()
    with RawClient() as c:
        r = c.fetch(server.address, "f")  # lockstep: an answer every few tens of microseconds
    assert r.data == data
    server.wait_until(lambda s: s.active_transfers == 0)
    assert server.call(lambda: server.server.polled_answers) > 0


def test_busy_poll_gives_up_on_a_slow_client(make_server: MakeServer, served_dir: Path) -> None:
    """A client slower than the bound costs BUSY_POLL_MISSES polls, not one per window."""
    data = content(30 * 4 * 512)
    (served_dir / "f").write_bytes(data)
    server = make_server(timeout=1.0)
    with RawClient() as c:
        r = c.fetch(server.address, "f", options=(("windowsize", "4"),), ack_delay=0.003)
    assert r.data == data
    server.wait_until(lambda s: s.active_transfers == 0)
    timeouts, answers = server.call(
        lambda: (server.server.poll_timeouts, server.server.polled_answers)
    )
    # 31 windows: two misses stop the polling; a scheduling hiccup may let one poll succeed
    assert BUSY_POLL_MISSES <= timeouts <= 2 * BUSY_POLL_MISSES
    assert answers <= 2


def test_no_busy_poll_while_other_transfers_run(make_server: MakeServer, served_dir: Path) -> None:
    (served_dir / "hang").write_bytes(content(100_000))
    data = content(200 * 512)
    (served_dir / "f").write_bytes(data)
    server = make_server(timeout=5.0)
    other = start_hanging(server, "hang")
    try:
        with RawClient() as c:
            r = c.fetch(server.address, "f")
        assert r.data == data
        assert server.call(lambda: server.server.polled_answers) == 0
    finally:
        other.sock.close()
