"""Device records (wds/devices.py), the policy backed by them, and ``wds device``.

The approval workflow end to end: an unknown client is recorded as pending and not answered, an
admin approves it with the CLI while the server runs, and the next DISCOVER is answered.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from dhcp_strategies import discover

from pxe.dhcp.arch import describe_arch
from pxe.dhcp.codec import build_packet, parse_packet
from pxe.dhcp.decide import BootDecision, ClientIdentity, Ignore
from pxe.dhcp.policy import StoreBootPolicy
from pxe.dhcp.server import ProxyDhcpServer
from wds.config import PxeConfig
from wds.devices import DeviceError, DeviceStore, parse_device_id

LOOPBACK = IPv4Address("127.0.0.1")
MAC = "52:54:00:18:00:01"  # dhcp_strategies.discover's chaddr
UUID = uuid.UUID(bytes=bytes(range(1, 17)))  # and its option 97


def client(mac: str = MAC, client_uuid: uuid.UUID | None = None, arch: int = 0) -> ClientIdentity:
    return ClientIdentity(
        mac=mac,
        uuid=client_uuid,
        arch=describe_arch(arch),
        vendor_class="PXEClient",
        ipxe=False,
        http=False,
        relayed=False,
        server_ip=LOOPBACK,
    )


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with DeviceStore.open(tmp_path / "state") as s:
        yield s


# -- the store -------------------------------------------------------------------------------


def test_store_is_wal_with_a_busy_timeout(store: DeviceStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_prestage_by_mac_and_by_uuid_and_find(store: DeviceStore) -> None:
    store.prestage(mac=MAC, boot_file="special.kpxe", image="win/pro", session="lab")
    store.prestage(uuid=UUID)
    by_mac = store.find(mac=MAC, uuid=None)
    assert by_mac is not None and by_mac.state == "prestaged"
    assert (by_mac.boot_file, by_mac.image, by_mac.session) == ("special.kpxe", "win/pro", "lab")
    by_uuid = store.find(mac="52:54:00:99:99:99", uuid=UUID)
    assert by_uuid is not None and by_uuid.mac is None and by_uuid.uuid == UUID
    store.prestage(mac=MAC, boot_file="other.kpxe")  # updates, no duplicate
    assert [d.boot_file for d in store.list() if d.mac == MAC] == ["other.kpxe"]


def test_pending_approve_reject(store: DeviceStore) -> None:
    device = store.record_pending(mac=MAC, uuid=None, arch="x86 BIOS (0)")
    assert device is not None and device.state == "pending" and device.first_seen
    assert store.set_state(MAC, "approved").state == "approved"
    assert store.set_state(MAC.upper().replace(":", "-"), "rejected").state == "rejected"
    with pytest.raises(DeviceError, match="no device"):
        store.set_state("52:54:00:00:00:99", "approved")


def test_two_connections_at_once(store: DeviceStore) -> None:
    """The server's connection and a CLI's: writes of one are seen by the other at once."""
    with DeviceStore.open(store.path.parent) as other:
        store.record_pending(mac=MAC, uuid=None, arch="x")
        assert other.find(mac=MAC)
        other.set_state(MAC, "approved")
        found = store.find(mac=MAC)
        assert found is not None and found.state == "approved"


@pytest.mark.parametrize(
    "text", ["", "52:54:00", "zz:54:00:18:00:01", "52:54:00:18:00:01:02", "not-a-uuid-at-all"]
)
def test_bad_device_ids_are_clear_errors(text: str) -> None:
    with pytest.raises(DeviceError, match=r"MAC|UUID"):
        parse_device_id(text)


def test_placeholder_uuid_is_refused() -> None:
    with pytest.raises(DeviceError, match="placeholder"):
        parse_device_id(str(uuid.UUID(int=0)))


# -- the policy ------------------------------------------------------------------------------


def test_policy_states(store: DeviceStore) -> None:
    policy = StoreBootPolicy(PxeConfig(answer="known"), store)
    assert isinstance(policy.boot_for(client()), Ignore)  # unknown, not recorded
    assert store.list() == []
    store.prestage(mac=MAC, boot_file="own.kpxe")
    decision = policy.boot_for(client())
    assert isinstance(decision, BootDecision) and decision.boot_file == "own.kpxe"
    store.prestage(uuid=UUID)
    by_uuid = policy.boot_for(client("52:54:00:00:00:07", UUID))
    assert isinstance(by_uuid, BootDecision) and by_uuid.boot_file == "undionly.kpxe"
    store.set_state(MAC, "rejected")
    rejected = policy.boot_for(client())
    assert isinstance(rejected, Ignore) and "rejected" in rejected.reason


def test_record_pending_holds_unknown_clients_until_approved(store: DeviceStore) -> None:
    policy = StoreBootPolicy(PxeConfig(answer="all", record_pending=True), store)
    first = policy.boot_for(client())
    assert isinstance(first, Ignore) and "pending" in first.reason
    again = policy.boot_for(client())
    assert isinstance(again, Ignore) and "wds device approve" in again.reason
    [device] = store.list()
    assert (device.mac, device.state, device.arch) == (MAC, "pending", "x86 BIOS (0)")
    store.set_state(MAC, "approved")
    assert isinstance(policy.boot_for(client()), BootDecision)


def test_answer_none_wins_and_database_errors_stay_silent(store: DeviceStore) -> None:
    store.prestage(mac=MAC)
    assert isinstance(StoreBootPolicy(PxeConfig(answer="none"), store).boot_for(client()), Ignore)
    policy = StoreBootPolicy(PxeConfig(), store)
    store.close()
    result = policy.boot_for(client())
    assert isinstance(result, Ignore) and "device database unavailable" in result.reason


# -- the CLI ---------------------------------------------------------------------------------


def wds(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "device", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_prestage_list_show_approve_reject(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = wds(
        "prestage", "52-54-00-18-00-0A", "--boot-file", "a.efi", "--image", "g/n", state=state
    )
    assert done.returncode == 0 and "52:54:00:18:00:0a: prestaged" in done.stdout
    assert wds("prestage", str(UUID), "--session", "s1", state=state).returncode == 0
    with DeviceStore.open(state) as store:
        store.record_pending(mac=MAC, uuid=None, arch="x64 UEFI (7)")
    listed = json.loads(wds("list", "--json", state=state).stdout)
    assert {(d["mac"], d["uuid"], d["state"]) for d in listed} == {
        ("52:54:00:18:00:0a", None, "prestaged"),
        (None, str(UUID), "prestaged"),
        (MAC, None, "pending"),
    }
    table = wds("list", state=state).stdout
    assert "pending" in table and "a.efi" in table
    shown = wds("show", MAC, state=state)
    assert shown.returncode == 0 and "state:      pending" in shown.stdout
    assert "x64 UEFI (7)" in shown.stdout
    assert wds("approve", MAC, state=state).stdout.strip() == f"{MAC}: approved"
    assert wds("reject", MAC, state=state).stdout.strip() == f"{MAC}: rejected"


def test_cli_finds_state_dir_through_config(tmp_path: Path) -> None:
    config = tmp_path / "wds.toml"
    config.write_text('[server]\nstate_dir = "st"\n')
    done = subprocess.run(
        [sys.executable, "-m", "wds.cli.main", "device", "prestage", MAC, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "st" / "devices.sqlite3").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ("approve", "52:54:00:zz:00:01"),
        ("prestage", "1234"),
        ("show", "52:54:00:18:00:99"),
        ("reject", "00000000-0000-0000-0000-000000000000"),
        ("prestage", MAC, "--boot-file", "x" * 300),
    ],
)
def test_cli_bad_input_is_one_line_exit_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = wds(*args, state=tmp_path / "state")
    assert done.returncode == 1
    assert done.stderr.startswith("wds: error: ") and "Traceback" not in done.stderr


def test_cli_usage_error_exit_2(tmp_path: Path) -> None:
    done = wds("approve", state=tmp_path / "state")
    assert done.returncode == 2 and "Traceback" not in done.stderr


# -- approval changes what the client is told on its next DISCOVER ---------------------------


def run(test: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


def test_approval_by_cli_while_serving_changes_the_next_answer(tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        transport, receiver = await loop.create_datagram_endpoint(
            _Client, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        store = DeviceStore.open(state)
        config = replace(PxeConfig(), answer="all", record_pending=True)
        server = ProxyDhcpServer(
            StoreBootPolicy(config, store),
            server_ip=LOOPBACK,
            bind_address="127.0.0.1",
            dhcp_port=0,
            pxe_port=0,
            client_port=port,
        )
        ports = await server.start()
        request = build_packet(discover(ciaddr=LOOPBACK))
        try:
            transport.sendto(request, ("127.0.0.1", ports.dhcp))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(receiver.received.get(), 0.5)
            listed = await asyncio.to_thread(wds, "list", "--json", state=state)
            assert [(d["mac"], d["state"]) for d in json.loads(listed.stdout)] == [(MAC, "pending")]
            approved = await asyncio.to_thread(wds, "approve", MAC, state=state)
            assert approved.returncode == 0, approved.stderr
            transport.sendto(request, ("127.0.0.1", ports.dhcp))
            offer = parse_packet(await asyncio.wait_for(receiver.received.get(), 5))
            assert offer.option(53) == b"\x02" and offer.file == b"undionly.kpxe"
            rejected = await asyncio.to_thread(wds, "reject", MAC, state=state)
            assert rejected.returncode == 0
            transport.sendto(request, ("127.0.0.1", ports.dhcp))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(receiver.received.get(), 0.5)
            assert server.replies_sent == 1
        finally:
            await server.stop()
            store.close()
            transport.close()

    run(scenario)


def test_a_locked_database_makes_the_server_stay_silent_not_stall(tmp_path: Path) -> None:
    """The server writes pending records from its event loop: a writer holding the lock (a
    CLI, say) costs it at most its short busy timeout, and the client is simply not answered."""
    import time

    with DeviceStore.open(tmp_path, busy_timeout_ms=100) as store:
        policy = StoreBootPolicy(PxeConfig(record_pending=True), store)
        other = sqlite3.connect(store.path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            start = time.monotonic()
            result = policy.boot_for(client())
            assert time.monotonic() - start < 1.0
            assert isinstance(result, Ignore) and "device database unavailable" in result.reason
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert isinstance(policy.boot_for(client()), Ignore)  # now recorded as pending
        assert [d.state for d in store.list()] == ["pending"]


def test_pending_last_seen_is_not_rewritten_on_every_discover(store: DeviceStore) -> None:
    first = store.record_pending(mac=MAC, uuid=None, arch="x86 BIOS (0)")
    again = store.record_pending(mac=MAC, uuid=None, arch="x86 BIOS (0)")
    assert first is not None and again is not None and again.last_seen == first.last_seen
