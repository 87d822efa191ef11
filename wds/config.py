"""The one configuration module: TOML in, frozen typed objects out.

The file is read once (``load_config``) into :class:`Config`. Every key is declared here as a
dataclass field with its default; ``config/wds.toml`` documents the same keys. A key that is not
declared, a value of the wrong type, or a value outside its range raises :class:`ConfigError` naming
the file, the key and the value -- before any socket is opened.

Relative paths in a config file are taken relative to the directory of that file, so a config and
the trees it names can travel together.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wds.errors import ConfigError

Check = Callable[[Any], str | None]


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "must be a UDP/TCP port number 0..65535 (0 = any)"


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or greater"


def _between(lo: float, hi: float) -> Check:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo} and {hi}"

    return check


def _ipv4(value: Any) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return "must be an IPv4 address such as 0.0.0.0 or 198.18.0.1"
    return None


def _ipv4_or_empty(value: Any) -> str | None:
    return None if value == "" else _ipv4(value)


def _multicast_net(value: Any) -> str | None:
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError:
        return "must be an IPv4 network such as 239.255.42.0/24"
    if not net.is_multicast:
        return "must lie inside 224.0.0.0/4 (239.0.0.0/8, administratively scoped, is best)"
    return None


def _multicast_or_empty(value: Any) -> str | None:
    if value == "":
        return None
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return "must be an IPv4 multicast address such as 239.255.42.1, or empty to allocate"
    return None if addr.is_multicast else "must be a multicast address (224.0.0.0/4)"


_PORT_RANGE = re.compile(r"^(\d{1,5})-(\d{1,5})$")


def _port_range(value: Any) -> str | None:
    m = _PORT_RANGE.match(value)
    if not m or not (1 <= int(m[1]) <= int(m[2]) <= 65535):
        return "must be a port range 'LOW-HIGH' with 1 <= LOW <= HIGH <= 65535"
    return None


def _iface(value: Any) -> str | None:
    # Linux IFNAMSIZ is 16 including the NUL byte.
    if value == "" or re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", value):
        return None
    return "must be a network interface name (up to 15 characters) or empty for any"


def _http_url(value: Any) -> str | None:
    if value == "" or re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", value):
        return None
    return "must be an http:// or https:// URL such as http://198.18.0.1:8080/, or empty"


def _name(value: Any) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        return None
    return "must be 1-64 characters of letters, digits, '.', '_' or '-'"


def _iso_time_or_empty(value: Any) -> str | None:
    if value == "":
        return None
    try:
        _dt.datetime.fromisoformat(value)
    except ValueError:
        return "must be an ISO 8601 time such as 2026-12-01T18:00:00+01:00, or empty"
    return None


def _chunk_size(value: Any) -> str | None:
    if value < 64 * 1024 or value > 64 * 1024 * 1024 or value & (value - 1):
        return "must be a power of two between 64 KiB (65536) and 64 MiB (67108864)"
    return None


def opt(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declare a config key: its default, a one-line description, and an optional value check."""
    if isinstance(default, list | dict):
        raise TypeError("use tuple defaults")
    return field(default=default, metadata={"doc": doc, "check": check})


@dataclass(frozen=True)
class ServerConfig:
    address: str = opt("0.0.0.0", "IPv4 address the services bind to; 0.0.0.0 = all", _ipv4)
    interface: str = opt("", "interface for broadcast DHCP and multicast; empty = any", _iface)
    state_dir: Path = opt(Path("/var/lib/wds"), "where device records and keys are kept")
    store: Path = opt(Path("/var/lib/wds/store"), "the image store (boot and install WIMs)")
    user: str = opt("", "drop privileges to this user after binding ports; empty = stay")
    log_level: Literal["debug", "info", "warning", "error"] = opt("info", "log verbosity")
    stop_grace: float = opt(
        10.0, "seconds a stopping server lets running transfers finish", _between(0, 3600)
    )


@dataclass(frozen=True)
class TftpConfig:
    enabled: bool = opt(True, "run the TFTP server")
    address: str = opt("", "address to listen on; empty = [server] address", _ipv4_or_empty)
    port: int = opt(69, "UDP port of the TFTP server", _port)
    root: Path = opt(Path("/var/lib/wds/tftp"), "directory served; nothing outside it is served")
    case_insensitive: bool = opt(True, "match file names in any case (WDS clients need it)")
    max_blksize: int = opt(
        65464, "largest blksize granted (RFC 2348: 8..65464)", _between(8, 65464)
    )
    max_windowsize: int = opt(64, "largest windowsize granted (RFC 7440)", _between(1, 65535))
    timeout: float = opt(1.0, "first retransmission timeout in seconds", _between(0.01, 255))
    max_retries: int = opt(6, "retransmissions of one window before giving up", _between(1, 100))
    max_transfers: int = opt(512, "concurrent transfers in total", _positive)
    max_transfers_per_client: int = opt(8, "concurrent transfers per client address", _positive)
    max_queued: int = opt(256, "requests waiting for a slot before refusing", _non_negative)
    max_queue_wait: float = opt(
        10.0, "seconds a queued request waits for a slot before it is dropped", _positive
    )
    min_timeout: float = opt(
        0.05,
        "smallest retransmission timeout the measured round trip may give",
        _between(0.001, 255),
    )
    adaptive: bool = opt(True, "measure round trips for the timeout and shrink the window on loss")
    busy_poll_us: int = opt(
        200,
        "microseconds to poll for a client's ACK after a window while one transfer runs; 0 = off",
        _between(0, 1000),
    )


@dataclass(frozen=True)
class PxeBootConfig:
    """One boot file per client architecture (RFC 4578 option 93, IANA processor types)."""

    bios: str = opt("undionly.kpxe", "x86 BIOS (arch 0)")
    efi_ia32: str = opt("", "x86 UEFI (arch 6); empty = not answered")
    efi_x64: str = opt("ipxe.efi", "x64 UEFI (arch 7 and 9)")
    efi_arm32: str = opt("", "ARM 32-bit UEFI (arch 10); empty = not answered")
    efi_arm64: str = opt("", "ARM 64-bit UEFI (arch 11); empty = not answered")
    ipxe_script: str = opt("boot.ipxe", "path of the iPXE script (HTTP) given to iPXE clients")


@dataclass(frozen=True)
class PxeConfig:
    enabled: bool = opt(True, "run the ProxyDHCP and PXE boot server")
    dhcp_port: int = opt(67, "UDP port for proxy offers (DHCP broadcast)", _port)
    pxe_port: int = opt(4011, "UDP port of the PXE boot server (REQUEST/ACK)", _port)
    answer: Literal["all", "known", "none"] = opt("all", "which PXE clients are answered")
    record_pending: bool = opt(False, "record unknown clients as pending for `wds device approve`")
    delay: float = opt(0.0, "seconds to wait before answering", _between(0, 60))
    proxy_mode: Literal["auto", "offer", "port4011"] = opt(
        "auto",
        "how PXE clients get the boot file: 'offer' = in the proxy offer (option 43 bypasses "
        "discovery), 'port4011' = no option 43, the client asks on port 4011 (what many UEFI "
        "firmwares need), 'auto' = offer for BIOS and iPXE, port4011 for UEFI",
    )
    http_url: str = opt(
        "",
        "base URL of iPXE scripts and UEFI HTTP Boot files; empty = http://ADDRESS:[http] port/",
        _http_url,
    )
    boot: PxeBootConfig = field(default_factory=PxeBootConfig, metadata={"doc": "boot files"})


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = opt(True, "run the HTTP server (boot, manifests, chunks, admin API)")
    address: str = opt(
        "", "address for boot and content endpoints; empty = [server]", _ipv4_or_empty
    )
    port: int = opt(8080, "TCP port for boot files, iPXE scripts, manifests and chunks", _port)
    admin_address: str = opt("127.0.0.1", "address of the admin API", _ipv4)
    admin_port: int = opt(8081, "TCP port of the admin API", _port)
    token_file: Path | None = opt(None, "file holding the admin token; required when exposed")


@dataclass(frozen=True)
class DeployConfig:
    """The deployment environment a machine with an assigned session is booted into."""

    kernel: Path = opt(Path("/var/lib/wds/deploy/vmlinuz"), "Linux kernel served over HTTP")
    initrd: Path = opt(Path("/var/lib/wds/deploy/initrd.img"), "its initramfs")
    cmdline: str = opt("console=ttyS0", "extra kernel command line for the environment")
    target: str = opt("/dev/vda", "disk the environment writes the image to")


@dataclass(frozen=True)
class MulticastConfig:
    group_pool: str = opt("239.255.42.0/24", "groups sessions are given", _multicast_net)
    port_pool: str = opt("9000-9099", "UDP ports sessions are given", _port_range)
    mtu: int = opt(1500, "link MTU; datagrams are sized to never fragment", _between(576, 9216))
    ttl: int = opt(1, "multicast TTL (1 = stay on the local link)", _between(1, 255))
    max_rate_mbps: float = opt(500.0, "default maximum send rate, Mbit/s", _positive)
    chunk_size: int = opt(1024 * 1024, "bytes per verified chunk (manifest)", _chunk_size)


@dataclass(frozen=True)
class SessionConfig:
    """One ``[[session]]`` entry: a multicast session for an install image."""

    name: str = opt("", "unique session name", _name)
    image: str = opt("", "install image: 'GROUP/NAME' or 'GROUP/NAME:INDEX'")
    mode: Literal["auto", "scheduled"] = opt("auto", "auto: start on first client; scheduled")
    start_at: str = opt("", "scheduled: start at this ISO 8601 time", _iso_time_or_empty)
    min_clients: int = opt(0, "scheduled: start when this many clients joined", _non_negative)
    max_wait: float = opt(
        0.0, "scheduled: start after this many seconds; 0 = no limit", _non_negative
    )
    rate_mbps: float = opt(
        0.0, "maximum rate, Mbit/s; 0 = [multicast] max_rate_mbps", _non_negative
    )
    group: str = opt("", "multicast group; empty = from the pool", _multicast_or_empty)
    port: int = opt(0, "UDP port; 0 = from the pool", _port)
    slow_client: Literal["unicast", "wait", "drop"] = opt(
        "unicast", "what happens to a client below min_goodput_mbps"
    )
    min_goodput_mbps: float = opt(
        10.0, "goodput below which a client counts as slow", _non_negative
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``source`` is the file it came from (None for defaults)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    tftp: TftpConfig = field(default_factory=TftpConfig)
    pxe: PxeConfig = field(default_factory=PxeConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    multicast: MulticastConfig = field(default_factory=MulticastConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    session: tuple[SessionConfig, ...] = ()
    source: Path | None = field(default=None, metadata={"internal": True})


# --------------------------------------------------------------------------------------------
# Loading


class _Loader:
    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=key)

    def build(self, cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
        if not isinstance(data, Mapping):
            raise self.fail(where, f"must be a table, got {_show(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            bad = unknown[0]
            close = [f for f in fields if sorted(f) == sorted(bad)] or difflib.get_close_matches(
                bad, list(fields), n=1
            )
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(sorted(fields))
            raise self.fail(
                _join(where, bad),
                f"unknown key {bad!r} (value {_show(data[bad])}); {hint}keys allowed here: {known}",
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            key = _join(where, name)
            f = fields[name]
            values[name] = self.convert(hints[name], value, key)
            check: Check | None = f.metadata.get("check")
            if check is not None:
                problem = check(values[name])
                if problem:
                    raise self.fail(key, f"{name} = {_show(value)} {problem}")
        return cls(**values)

    def convert(self, hint: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            return self.build(typing.cast(type[Any], hint), value, key)
        if origin in (types.UnionType, typing.Union) and type(None) in args:
            (inner,) = [a for a in args if a is not type(None)]
            if value == "":
                return None
            return self.convert(inner, value, key)
        if origin is tuple:
            if not isinstance(value, list):
                raise self.fail(key, f"must be an array of tables ([[{key}]]), got {_show(value)}")
            return tuple(self.convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
        if origin is Literal:
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                raise self.fail(key, f"{_show(value)} is not one of {choices}")
            return value
        if hint is bool:
            if not isinstance(value, bool):
                raise self.fail(key, f"must be true or false, got {_show(value)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, f"must be an integer, got {_show(value)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(key, f"must be a number, got {_show(value)}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise self.fail(key, f"must be a string, got {_show(value)}")
            return value
        if hint is Path:
            if not isinstance(value, str) or not value:
                raise self.fail(key, f"must be a non-empty path string, got {_show(value)}")
            path = Path(value).expanduser()
            return path if path.is_absolute() else (self.base / path)
        raise TypeError(f"config type {hint!r} at {key} is not supported")  # a bug in wds


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _show(value: Any) -> str:
    text = repr(value)
    if isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_config(text: str, *, file: str = "<string>", base: Path | None = None) -> Config:
    """Parse config text. ``base`` anchors relative paths (default: the current directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: {exc}; fix the syntax at that line", file=file
        ) from None
    loader = _Loader(file, base if base is not None else Path.cwd())
    config: Config = loader.build(Config, data, "")
    _check_sessions(config, file)
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises :class:`ConfigError` for every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no such file; pass --config with an existing file", file=str(path)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file=str(path)) from None
    config = parse_config(text, file=str(path), base=path.resolve().parent)
    return dataclasses.replace(config, source=path)


def _check_sessions(config: Config, file: str) -> None:
    names: set[str] = set()
    groups: dict[tuple[str, int], str] = {}
    for i, s in enumerate(config.session):
        key = f"session[{i}]"
        if not s.name:
            raise ConfigError("every [[session]] needs a name", file=file, key=key + ".name")
        if s.name in names:
            raise ConfigError(
                f"name = {s.name!r} is used twice; session names must be unique",
                file=file,
                key=key + ".name",
            )
        names.add(s.name)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[^/:]+(:\d+)?", s.image):
            raise ConfigError(
                f"image = {s.image!r} must name a store image as 'GROUP/NAME' or "
                "'GROUP/NAME:INDEX'",
                file=file,
                key=key + ".image",
            )
        if s.mode == "scheduled" and not (s.start_at or s.min_clients or s.max_wait):
            raise ConfigError(
                "mode = 'scheduled' needs start_at, min_clients or max_wait; "
                "otherwise use mode = 'auto'",
                file=file,
                key=key + ".mode",
            )
        if s.group and s.port:
            other = groups.get((s.group, s.port))
            if other is not None:
                raise ConfigError(
                    f"group {s.group}:{s.port} is also used by session {other!r}",
                    file=file,
                    key=key + ".group",
                )
            groups[(s.group, s.port)] = s.name


def describe_keys(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every key as (dotted name, default, doc): used to keep config/wds.toml honest."""
    out: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        name = _join(prefix, f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.extend(describe_keys(typing.cast(type[Any], hint), name))
        elif typing.get_origin(hint) is tuple:
            out.extend(describe_keys(typing.get_args(hint)[0], name))
        else:
            out.append((name, f.default, f.metadata.get("doc", "")))
    return out
