"""wds/web/boot.py against an in-process aiohttp server on loopback, with a fake SessionControl.

The iPXE script for each device state, the entry script, the deploy kernel/initrd, and /boot/
served as TFTP serves it (a path-traversal corpus included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wds.config import Config, DeployConfig, HttpConfig, PxeConfig, ServerConfig, TftpConfig
from wds.context import ServerContext, SessionStatus
from wds.devices import Device, DeviceEvents, DeviceStore
from wds.web.boot import add_boot_routes

MAC = "52:54:00:18:00:01"
FINGERPRINT = "sha256:" + "ab" * 32


class FakeSessions:
    """for_device: the device's own session, if in ``states``."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {"lab": "running"}

    def for_device(self, device: Device) -> SessionStatus | None:
        state = self.states.get(device.session)
        if state is None:
            return None
        return SessionStatus(
            name=device.session,
            image="lab/win11:1",
            mode="auto",
            state=state,  # type: ignore[arg-type]
            origin="config",
            group=None,
            port=None,
            rate_mbps=100.0,
            size=0,
            chunks=0,
            started_at=None,
            bytes_sent=0,
            repairs_sent=0,
        )

    @property
    def fingerprint(self) -> str:
        return FINGERPRINT


def make_config(tmp_path: Path, **pxe: Any) -> Config:
    root = tmp_path / "tftp"
    (root / "EFI" / "Boot").mkdir(parents=True, exist_ok=True)
    (root / "ipxe.efi").write_bytes(b"MZ" + bytes(range(256)) * 1200)  # > one stream chunk
    (root / "EFI" / "Boot" / "bootx64.efi").write_bytes(b"efi")
    deploy = tmp_path / "deploy"
    deploy.mkdir(exist_ok=True)
    (deploy / "vmlinuz").write_bytes(b"kernel")
    return Config(
        server=ServerConfig(address="127.0.0.1", state_dir=tmp_path / "state"),
        tftp=TftpConfig(root=root),
        pxe=PxeConfig(**pxe),
        http=HttpConfig(address="127.0.0.1", port=0),
        deploy=DeployConfig(
            kernel=deploy / "vmlinuz",
            initrd=deploy / "initrd.img",
            cmdline="console=ttyS0  quiet",
            target="/dev/vda",
        ),
    )


Scenario = Callable[[TestClient[Any, Any], ServerContext, FakeSessions], Awaitable[None]]


def serve(tmp_path: Path, scenario: Scenario, **pxe: Any) -> None:
    async def main() -> None:
        config = make_config(tmp_path, **pxe)
        with DeviceStore.open(config.server.state_dir) as store:
            sessions = FakeSessions()
            ctx = ServerContext(config, store, DeviceEvents(store), sessions)  # type: ignore[arg-type]
            app = web.Application()
            add_boot_routes(app, ctx)
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                await scenario(client, ctx, sessions)

    asyncio.run(asyncio.wait_for(main(), 30))


async def text(client: TestClient[Any, Any], path: str, status: int = 200) -> str:
    response = await client.get(path)
    body = await response.text()
    assert response.status == status, body
    return body


def test_entry_script_chains_to_the_device_script(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        script = await text(client, "/boot.ipxe")
        base = f"http://127.0.0.1:{client.port}"
        assert script.startswith("#!ipxe\n")
        assert f"chain --replace {base}/ipxe/${{netX/mac:hexhyp}}" in script

    serve(tmp_path, scenario)


def test_entry_script_path_follows_the_config(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        assert "#!ipxe" in await text(client, "/scripts/start.ipxe")
        await text(client, "/boot.ipxe", 404)

    from wds.config import PxeBootConfig

    serve(tmp_path, scenario, boot=PxeBootConfig(ipxe_script="scripts/start.ipxe"))


def test_deploy_script_for_a_prestaged_device_with_a_session(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        ctx.devices.prestage(mac=MAC, session="lab")
        script = await text(client, "/ipxe/52-54-00-18-00-01")
        base = f"http://127.0.0.1:{client.port}"
        assert f"kernel {base}/deploy/vmlinuz " in script
        cmdline = script.split(f"kernel {base}/deploy/vmlinuz ", 1)[1].split("\n", 1)[0]
        assert cmdline.split() == [
            f"wds.server=127.0.0.1:{client.port}",
            "wds.session=lab",
            f"wds.fingerprint={FINGERPRINT}",
            f"wds.device={MAC}",
            "wds.target=/dev/vda",
            "initrd=initrd.img",
            "console=ttyS0",
            "quiet",
        ]
        assert f"initrd {base}/deploy/initrd.img\nboot\n" in script
        # the fetch taught the server the address, and is in the device's history
        assert ctx.devices.mac_for("127.0.0.1") == MAC
        (event,) = ctx.devices.events(MAC)
        assert (event.kind, event.detail) == ("script", "deploy session lab")

    serve(tmp_path, scenario)


def test_approved_device_without_a_session_boots_from_its_disk(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        ctx.devices.prestage(mac=MAC)
        ctx.devices.set_state(MAC, "approved")
        script = await text(client, f"/ipxe/{MAC}")
        assert "# wds: device 52:54:00:18:00:01 has no session to join" in script
        assert script.rstrip().endswith("exit") and "kernel" not in script

    serve(tmp_path, scenario)


def test_stopped_session_and_finished_deployment_boot_from_the_disk(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, fake: Any) -> None:
        ctx.devices.prestage(mac=MAC, session="lab")
        fake.states["lab"] = "stopped"
        assert "session lab is stopped" in await text(client, f"/ipxe/{MAC}")
        fake.states["lab"] = "running"
        assert "kernel" in await text(client, f"/ipxe/{MAC}")
        ctx.events.record("finished", "verified", mac=MAC)
        script = await text(client, f"/ipxe/{MAC}")
        assert "deployed since its record last changed" in script and "kernel" not in script
        await asyncio.sleep(0.01)
        ctx.devices.prestage(mac=MAC, session="lab")  # the admin asks for a new deployment
        assert "kernel" in await text(client, f"/ipxe/{MAC}")

    serve(tmp_path, scenario)


def test_pending_device_waits_and_retries_itself(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        script = await text(client, f"/ipxe/{MAC}")  # unknown: recorded as pending
        base = f"http://127.0.0.1:{client.port}"
        assert "waiting for approval" in script
        assert "sleep 10\n" in script
        assert script.endswith(f"chain --replace {base}/ipxe/52-54-00-18-00-01\n")
        device = ctx.devices.find(mac=MAC)
        assert device is not None and device.state == "pending"
        for _ in range(3):  # the retries are not written again and again
            await text(client, f"/ipxe/{MAC}")
        assert [e.detail for e in ctx.devices.events(MAC)] == ["waiting for approval"]
        ctx.devices.set_state(MAC, "approved")
        ctx.devices.update(MAC, session="lab")
        assert "wds.session=lab" in await text(client, f"/ipxe/{MAC}")
        assert [e.detail for e in ctx.devices.events(MAC)][-1] == "deploy session lab"

    serve(tmp_path, scenario, record_pending=True)


def test_rejected_and_unknown_devices(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        script = await text(client, f"/ipxe/{MAC}")
        assert "unknown device" in script and script.rstrip().endswith("exit")
        assert ctx.devices.find(mac=MAC) is None  # record_pending is off: not recorded
        ctx.devices.prestage(mac=MAC, session="lab")
        ctx.devices.set_state(MAC, "rejected")
        script = await text(client, f"/ipxe/{MAC}")
        assert "echo wds: device 52:54:00:18:00:01 was rejected" in script
        assert "kernel" not in script and script.rstrip().endswith("exit")

    serve(tmp_path, scenario)


@pytest.mark.parametrize("bad", ["zz", "52:54:00:18:00", "52-54-00-18-00-01-02", "%0a"])
def test_bad_mac_is_400(tmp_path: Path, bad: str) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        body = await text(client, f"/ipxe/{bad}", 400)
        assert "is not a MAC address" in body

    serve(tmp_path, scenario)


def test_deploy_kernel_and_missing_initrd(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        response = await client.get("/deploy/vmlinuz")
        assert response.status == 200 and await response.read() == b"kernel"
        body = await text(client, "/deploy/initrd.img", 404)
        assert "build it with `wds lab build-env`" in body and "initrd" in body

    serve(tmp_path, scenario)


def test_boot_files_are_served_and_recorded_by_address(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        ctx.events.remember_address("127.0.0.1", MAC)
        response = await client.get("/boot/ipxe.efi")
        data = await response.read()
        assert response.status == 200
        assert data == (Path(ctx.config.tftp.root) / "ipxe.efi").read_bytes()
        assert response.headers["Content-Length"] == str(len(data))
        # case-insensitive as TFTP ([tftp] case_insensitive = true by default), backslashes too
        response = await client.get("/boot/efi/BOOT/BOOTX64.EFI")
        assert await response.read() == b"efi"
        head = await client.head("/boot/ipxe.efi")
        assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
        events = ctx.devices.events(MAC)
        assert [e.detail for e in events] == [
            f"http ipxe.efi {len(data)} bytes",
            "http EFI/Boot/bootx64.efi 3 bytes",
        ]

    serve(tmp_path, scenario)


TRAVERSAL = [
    "../state/devices.sqlite3",
    "..%2fstate%2fdevices.sqlite3",
    "%2e%2e/%2e%2e/etc/passwd",
    "EFI/../../state/devices.sqlite3",
    "..\\state\\devices.sqlite3",
    "EFI%5c..%5c..%5cstate%5cdevices.sqlite3",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "outside",
    "EFI/outside",
    "fifo",
    "EFI",
    "nul%00byte",
    "a" * 300,
    "missing.efi",
]


def test_path_traversal_corpus_never_leaves_the_root(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        root = Path(ctx.config.tftp.root)
        (tmp_path / "secret").write_bytes(b"SECRET")
        os.symlink(tmp_path / "secret", root / "outside")
        os.symlink("../../secret", root / "EFI" / "outside")
        os.mkfifo(root / "fifo")
        for path in TRAVERSAL:
            response = await client.get("/boot/" + path)
            body = await response.read()
            assert response.status in (400, 403, 404), (path, response.status)
            assert b"SECRET" not in body and b"root:" not in body and b"SQLite" not in body

    serve(tmp_path, scenario)


def test_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        root = Path(ctx.config.tftp.root)
        os.symlink("EFI/Boot/bootx64.efi", root / "alias.efi")
        response = await client.get("/boot/alias.efi")
        assert response.status == 200 and await response.read() == b"efi"

    serve(tmp_path, scenario)


def test_device_script_never_builds_an_unsafe_command_line(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        ctx.devices.prestage(mac=MAC, session="lab")
        ctx.config = dataclasses.replace(
            ctx.config, deploy=dataclasses.replace(ctx.config.deploy, target="/dev/vda\nshell")
        )
        script = await text(client, f"/ipxe/{MAC}")
        assert "kernel" not in script and "shell" not in script
        assert "cannot build the deploy command line (wds.target)" in script

    serve(tmp_path, scenario)


def test_the_url_proxydhcp_gives_http_boot_clients_is_served(tmp_path: Path) -> None:
    """pxe.dhcp.policy and wds.web.boot agree on where UEFI HTTP Boot files live."""
    from ipaddress import IPv4Address

    from pxe.dhcp.arch import describe_arch
    from pxe.dhcp.decide import BootDecision, ClientIdentity
    from pxe.dhcp.policy import ConfigBootPolicy

    async def scenario(client: TestClient[Any, Any], ctx: ServerContext, _: Any) -> None:
        http_boot = ClientIdentity(
            mac=MAC,
            uuid=None,
            arch=describe_arch(16),  # x64 UEFI HTTP
            vendor_class="HTTPClient:Arch:00016:UNDI:003000",
            ipxe=False,
            http=True,
            relayed=False,
            server_ip=IPv4Address("127.0.0.1"),
        )
        policy = ConfigBootPolicy(ctx.config.pxe, http_port=client.port)
        decision = policy.boot_for(http_boot)
        assert isinstance(decision, BootDecision)
        assert decision.boot_file == f"http://127.0.0.1:{client.port}/boot/ipxe.efi"
        response = await client.get(decision.boot_file.split(str(client.port), 1)[1])
        assert response.status == 200
        assert await response.read() == (Path(ctx.config.tftp.root) / "ipxe.efi").read_bytes()

    serve(tmp_path, scenario)
