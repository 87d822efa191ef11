"""Device records in the state directory: prestaged devices and the approval workflow.

One SQLite file, ``STATE_DIR/devices.sqlite3`` (stdlib :mod:`sqlite3`), shared by the running
server (the PXE policy reads it for every request and records unknown clients) and by the
``wds device`` commands, which may run at the same time: the database is in WAL mode (readers never
block the writer) with a busy timeout, and every operation is one short transaction.

A device is identified by its MAC address, its SMBIOS UUID (DHCP option 97), or both. Its state:

* ``prestaged`` -- the admin created it (``wds device prestage``); answered.
* ``pending`` -- an unknown client the PXE server saw with ``[pxe] record_pending``; not
  answered until an admin approves it.
* ``approved`` -- answered from the next DISCOVER on.
* ``rejected`` -- never answered (until prestaged or approved again).

A device may carry its own boot file and, for later stages, the install image and the multicast
session it is to join.

Beside the records the database keeps, bounded:

* each device's **event history** (table ``device_event``: booted, boot-file, script, joined,
  progress, finished, failed): the last :data:`MAX_EVENTS_PER_DEVICE` per MAC and at most
  :data:`MAX_EVENTS` in all, oldest dropped first, so a flood of unknown MACs costs a bounded
  table, not the disk;
* the **IP -> MAC map** (table ``device_address``) learnt from DHCP REQUESTs and iPXE script
  fetches, so services that only see an IP address (TFTP, HTTP) can name the device; at most
  :data:`MAX_ADDRESSES` entries, the newest mapping of an address wins.

:class:`DeviceEvents` is the :class:`wds.context.EventSink` of ``wds serve`` on top of them: it
never raises into a server loop (a busy database costs an event, logged at DEBUG) and keeps at
most one ``progress`` event per device every :data:`PROGRESS_EVERY` seconds.
"""

from __future__ import annotations

import builtins
import logging
import re
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from wds.errors import WdsError

__all__ = [
    "ANSWERED",
    "DB_NAME",
    "MAX_ADDRESSES",
    "MAX_EVENTS",
    "MAX_EVENTS_PER_DEVICE",
    "SERVER_BUSY_TIMEOUT_MS",
    "Device",
    "DeviceError",
    "DeviceEvent",
    "DeviceEvents",
    "DeviceState",
    "DeviceStore",
    "parse_device_id",
    "parse_mac",
    "parse_uuid",
]

DB_NAME = "devices.sqlite3"
DeviceState = Literal["prestaged", "pending", "approved", "rejected"]
#: states whose devices the PXE server answers
ANSWERED: frozenset[str] = frozenset({"prestaged", "approved"})
#: milliseconds a connection waits for another writer (the CLI beside the server)
BUSY_TIMEOUT_MS = 5000
#: what the PXE server waits at most: it writes from its event loop (pending records), and a
#: client that is not recorded this time asks again in a few seconds
SERVER_BUSY_TIMEOUT_MS = 250
#: a pending device's last_seen is rewritten at most this often (seconds): one write per
#: DISCOVER of a looping client would be a write per packet under a storm
LAST_SEEN_EVERY = 10.0
#: pending records kept at most; beyond it unknown clients are no longer recorded (a MAC flood
#: must not fill the disk)
MAX_PENDING = 10_000
#: longest boot file, image reference or session name stored
MAX_TEXT = 255
#: events kept per device (the newest); older ones are dropped as new ones come
MAX_EVENTS_PER_DEVICE = 200
#: events kept in all, over every device (a flood of unknown MACs stops here)
MAX_EVENTS = 100_000
#: longest event detail stored (longer ones are cut)
MAX_DETAIL = 500
#: IP -> MAC entries kept; beyond it the least recently confirmed are dropped
MAX_ADDRESSES = 10_000
#: an unchanged IP -> MAC mapping is rewritten at most this often (seconds)
ADDRESS_REFRESH_EVERY = 60.0
#: at most one "progress" event per device this often (seconds)
PROGRESS_EVERY = 5.0
#: devices whose last progress time :class:`DeviceEvents` remembers
MAX_THROTTLED = 4096
EVENT_KINDS = frozenset(
    {"booted", "boot-file", "script", "joined", "progress", "finished", "failed"}
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device (
    id INTEGER PRIMARY KEY,
    mac TEXT UNIQUE,
    uuid TEXT UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('prestaged', 'pending', 'approved', 'rejected')),
    boot_file TEXT NOT NULL DEFAULT '',
    image TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '',
    arch TEXT NOT NULL DEFAULT '',
    first_seen REAL,
    last_seen REAL,
    changed REAL NOT NULL,
    CHECK (mac IS NOT NULL OR uuid IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS device_event (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_event_mac ON device_event (mac, id);
CREATE TABLE IF NOT EXISTS device_address (
    ip TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS device_address_at ON device_address (at);
"""
_COLUMNS = "mac, uuid, state, boot_file, image, session, arch, first_seen, last_seen, changed"
_MAC_RE = re.compile(r"[0-9a-f]{12}")


class DeviceError(WdsError):
    """A device command was refused: bad MAC/UUID, unknown device, unusable database."""


def parse_mac(text: str) -> str:
    """ "52-54-00-AB-00-01", "525400ab0001" or "52:54:00:ab:00:01" -> "52:54:00:ab:00:01"."""
    digits = text.strip().lower().replace(":", "").replace("-", "").replace(".", "")
    if not _MAC_RE.fullmatch(digits):
        raise DeviceError(f"{text!r} is not a MAC address (expected e.g. 52:54:00:ab:00:01)")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def parse_uuid(text: str) -> uuid.UUID:
    try:
        value = uuid.UUID(text.strip())
    except ValueError:
        raise DeviceError(
            f"{text!r} is not a UUID (expected e.g. 4c4c4544-0042-3510-8051-b4c04f4d3232)"
        ) from None
    if value.int in (0, (1 << 128) - 1):  # placeholders firmware sends when it has none
        raise DeviceError(f"{text!r} is a placeholder UUID that identifies no machine")
    return value


def parse_device_id(text: str) -> tuple[str | None, uuid.UUID | None]:
    """A MAC or a UUID from the command line: ``(mac, None)`` or ``(None, uuid)``."""
    stripped = text.strip()
    if len(stripped.replace(":", "").replace("-", "").replace(".", "")) == 12:
        return parse_mac(stripped), None
    if len(stripped.replace("-", "").replace("{", "").replace("}", "")) == 32:
        return None, parse_uuid(stripped)
    raise DeviceError(f"{text!r} is neither a MAC address nor a UUID")


@dataclass(frozen=True)
class Device:
    """One device record."""

    mac: str | None
    uuid: uuid.UUID | None
    state: DeviceState
    boot_file: str = ""
    image: str = ""
    session: str = ""
    arch: str = ""  # as last seen by the PXE server
    first_seen: float | None = None
    last_seen: float | None = None
    changed: float = 0.0

    @property
    def answered(self) -> bool:
        return self.state in ANSWERED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["uuid"] = str(self.uuid) if self.uuid else None
        return data


@dataclass(frozen=True)
class DeviceEvent:
    """One entry of a device's history: what happened (``kind``), when, and the detail."""

    when: float  # wall-clock time
    kind: str  # one of wds.context.EventKind
    detail: str
    mac: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _device(row: sqlite3.Row) -> Device:
    return Device(
        mac=row["mac"],
        uuid=uuid.UUID(row["uuid"]) if row["uuid"] else None,
        state=cast(DeviceState, row["state"]),
        boot_file=row["boot_file"],
        image=row["image"],
        session=row["session"],
        arch=row["arch"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        changed=row["changed"],
    )


def _text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise DeviceError(f"{what} {value!r}: at most {MAX_TEXT} printable characters")
    return value


class DeviceStore:
    """The device table of one state directory. One connection; not shared across threads."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        #: ip -> (mac, time written): skips rewriting an unchanged mapping (bounded like the table)
        self._addresses: OrderedDict[str, tuple[str, float]] = OrderedDict()

    @classmethod
    def open(
        cls, state_dir: str | Path, *, create: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS
    ) -> DeviceStore:
        """Open (and with ``create`` make) the database of ``state_dir``."""
        path = Path(state_dir) / DB_NAME
        if not create and not path.exists():
            raise DeviceError(f"no device database at {str(path)!r} (has wds run here?)")
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DeviceError(f"cannot open the device database {str(path)!r}: {exc}") from None
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DeviceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DeviceError(f"device database {str(self.path)!r} is busy: {exc}") from None
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------

    def find(self, *, mac: str | None, uuid: uuid.UUID | None = None) -> Device | None:
        """The record of this MAC, else of this UUID (a MAC match wins)."""
        if mac is not None:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM device WHERE mac = ?", (mac,))
            found = row.fetchone()
            if found is not None:
                return _device(found)
        if uuid is not None:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM device WHERE uuid = ?", (str(uuid),))
            found = row.fetchone()
            if found is not None:
                return _device(found)
        return None

    def get(self, text: str) -> Device:
        """The device named by a MAC or UUID from the command line; DeviceError if none."""
        mac, device_uuid = parse_device_id(text)
        device = self.find(mac=mac, uuid=device_uuid)
        if device is None:
            raise DeviceError(f"no device {text!r} (see 'wds device list')")
        return device

    def list(self) -> list[Device]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM device ORDER BY state, mac, uuid")
        return [_device(row) for row in rows]

    # -- writing ---------------------------------------------------------------------------

    def prestage(
        self,
        *,
        mac: str | None = None,
        uuid: uuid.UUID | None = None,
        boot_file: str = "",
        image: str = "",
        session: str = "",
    ) -> Device:
        """Create or update a prestaged device (also turns a pending or rejected one into it)."""
        if mac is None and uuid is None:
            raise DeviceError("a prestaged device needs a MAC address or a UUID")
        values = (
            _text(boot_file, "boot file"),
            _text(image, "image"),
            _text(session, "session"),
        )
        now = time.time()
        key, value = ("mac", mac) if mac is not None else ("uuid", str(uuid))
        with self._write() as db:
            changed = db.execute(
                "UPDATE device SET state = 'prestaged', boot_file = ?, image = ?, session = ?, "
                f"changed = ? WHERE {key} = ?",
                (*values, now, value),
            ).rowcount
            if not changed:
                db.execute(
                    "INSERT INTO device (mac, uuid, state, boot_file, image, session, changed) "
                    "VALUES (?, ?, 'prestaged', ?, ?, ?, ?)",
                    (mac, str(uuid) if uuid else None, *values, now),
                )
        device = self.find(mac=mac, uuid=uuid)
        assert device is not None
        return device

    def set_state(self, text: str, state: DeviceState) -> Device:
        """Approve or reject the device named by ``text`` (a MAC or a UUID)."""
        mac, device_uuid = parse_device_id(text)
        key, value = ("mac", mac) if mac is not None else ("uuid", str(device_uuid))
        with self._write() as db:
            changed = db.execute(
                f"UPDATE device SET state = ?, changed = ? WHERE {key} = ?",
                (state, time.time(), value),
            ).rowcount
        if not changed:
            raise DeviceError(f"no device {text!r} (see 'wds device list')")
        return self.get(text)

    def record_pending(self, *, mac: str, uuid: uuid.UUID | None, arch: str) -> Device | None:
        """Record an unknown client as pending (or refresh its last_seen); None when full."""
        now = time.time()
        known = self.find(mac=mac)
        if known is not None and known.last_seen and now - known.last_seen < LAST_SEEN_EVERY:
            return known  # seen a moment ago: no write
        with self._write() as db:
            refreshed = db.execute(
                "UPDATE device SET last_seen = ?, arch = ? WHERE mac = ?", (now, arch[:64], mac)
            ).rowcount
            if not refreshed:
                (count,) = db.execute(
                    "SELECT count(*) FROM device WHERE state = 'pending'"
                ).fetchone()
                if count >= MAX_PENDING:
                    return None
                db.execute(
                    "INSERT INTO device (mac, uuid, state, arch, first_seen, last_seen, changed) "
                    "VALUES (?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (mac, str(uuid) if uuid else None, arch[:64], now, now, now),
                )
        return self.find(mac=mac, uuid=uuid)

    def update(
        self,
        text: str,
        *,
        boot_file: str | None = None,
        image: str | None = None,
        session: str | None = None,
    ) -> Device:
        """Set the boot file, image or session of an existing device (None = leave as is)."""
        changes = {
            key: _text(value, key.replace("_", " "))
            for key, value in (("boot_file", boot_file), ("image", image), ("session", session))
            if value is not None
        }
        mac, device_uuid = parse_device_id(text)
        key, value = ("mac", mac) if mac is not None else ("uuid", str(device_uuid))
        assignments = "".join(f"{name} = ?, " for name in changes)
        with self._write() as db:
            changed = db.execute(
                f"UPDATE device SET {assignments}changed = ? WHERE {key} = ?",
                (*changes.values(), time.time(), value),
            ).rowcount
        if not changed:
            raise DeviceError(f"no device {text!r} (see 'wds device list')")
        return self.get(text)

    # -- event history ---------------------------------------------------------------------

    def add_event(self, mac: str, kind: str, detail: str, when: float | None = None) -> None:
        """Append to the history of ``mac``; drops what is beyond the per-device and total caps."""
        mac = parse_mac(mac)
        if kind not in EVENT_KINDS:
            raise DeviceError(f"unknown event kind {kind!r}")
        detail = "".join(c if ord(c) >= 32 else " " for c in detail[:MAX_DETAIL])
        at = time.time() if when is None else when
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO device_event (mac, at, kind, detail) VALUES (?, ?, ?, ?)",
                (mac, at, kind, detail),
            )
            newest = cursor.lastrowid or 0
            # both deletes walk an index: the cost does not grow with the table
            db.execute(
                "DELETE FROM device_event WHERE mac = ? AND id <= (SELECT id FROM device_event "
                "WHERE mac = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (mac, mac, MAX_EVENTS_PER_DEVICE),
            )
            db.execute("DELETE FROM device_event WHERE id <= ?", (newest - MAX_EVENTS,))

    def events(self, text: str, limit: int = 200) -> builtins.list[DeviceEvent]:
        """The newest ``limit`` events of the device named by a MAC or UUID, oldest first.

        A MAC with a history but no record (a client answered with ``answer = "all"``) is fine;
        DeviceError when the name is neither a known device nor has a history.
        """
        mac, _ = parse_device_id(text)
        if mac is None:
            device = self.get(text)
            if device.mac is None:
                return []
            mac = device.mac
        rows = self._db.execute(
            "SELECT mac, at, kind, detail FROM device_event WHERE mac = ? ORDER BY id DESC LIMIT ?",
            (mac, max(0, min(limit, MAX_EVENTS_PER_DEVICE))),
        ).fetchall()
        if not rows and self.find(mac=mac) is None:
            raise DeviceError(f"no device {text!r} (see 'wds device list')")
        return [
            DeviceEvent(when=row["at"], kind=row["kind"], detail=row["detail"], mac=row["mac"])
            for row in reversed(rows)
        ]

    # -- IP -> MAC -------------------------------------------------------------------------

    def remember_address(self, ip: str, mac: str, when: float | None = None) -> None:
        """``ip`` is used by ``mac`` (the newest mapping of an address wins)."""
        mac = parse_mac(mac)
        now = time.time() if when is None else when
        known = self._addresses.get(ip)
        if known is not None and known[0] == mac and now - known[1] < ADDRESS_REFRESH_EVERY:
            return  # confirmed a moment ago: no write
        with self._write() as db:
            db.execute(
                "INSERT INTO device_address (ip, mac, at) VALUES (?, ?, ?) "
                "ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, at = excluded.at",
                (ip, mac, now),
            )
            # walks the index on `at` from the newest end: no count over the whole table
            db.execute(
                "DELETE FROM device_address WHERE at < (SELECT at FROM device_address "
                "ORDER BY at DESC LIMIT 1 OFFSET ?)",
                (MAX_ADDRESSES - 1,),
            )
        self._addresses[ip] = (mac, now)
        self._addresses.move_to_end(ip)
        while len(self._addresses) > MAX_ADDRESSES:
            self._addresses.popitem(last=False)

    def mac_for(self, ip: str) -> str | None:
        """The MAC last seen using ``ip``, or None."""
        row = self._db.execute("SELECT mac FROM device_address WHERE ip = ?", (ip,)).fetchone()
        return None if row is None else str(row["mac"])


class DeviceEvents:
    """:class:`wds.context.EventSink` over a :class:`DeviceStore`; see the module docstring.

    Called from the server's event loop: every write is one short transaction bounded by the
    store's busy timeout (:data:`SERVER_BUSY_TIMEOUT_MS` for the server), and a failure costs the
    event, never an exception in the caller.
    """

    def __init__(self, store: DeviceStore, *, progress_every: float = PROGRESS_EVERY) -> None:
        self.store = store
        self.progress_every = progress_every
        self._last_progress: OrderedDict[str, float] = OrderedDict()
        self.recorded = 0
        self.dropped = 0  # unknown address, throttled, bad input or a busy database

    def record(
        self,
        kind: str,
        detail: str,
        *,
        mac: str | None = None,
        ip: str | None = None,
        now: float | None = None,
    ) -> None:
        when = time.time() if now is None else now
        try:
            if mac is None and ip is not None:
                mac = self.store.mac_for(ip)
                if mac is None:
                    self.dropped += 1
                    log.debug(
                        "%s event from %s not kept: no device known at that address", kind, ip
                    )
                    return
            if mac is None:
                self.dropped += 1
                log.debug("%s event without a MAC or an address: not kept", kind)
                return
            mac = parse_mac(mac)
            if kind == "progress" and self._throttled(mac, when):
                self.dropped += 1
                return
            self.store.add_event(mac, kind, detail, when)
            self.recorded += 1
        except (DeviceError, sqlite3.Error) as exc:
            self.dropped += 1
            log.debug("%s event of %s not kept: %s", kind, mac or ip, exc)

    def remember_address(self, ip: str, mac: str) -> None:
        try:
            self.store.remember_address(ip, mac)
        except (DeviceError, sqlite3.Error) as exc:
            log.debug("address %s of %s not remembered: %s", ip, mac, exc)

    def _throttled(self, mac: str, now: float) -> bool:
        last = self._last_progress.get(mac)
        if last is not None and 0 <= now - last < self.progress_every:
            return True
        self._last_progress[mac] = now
        self._last_progress.move_to_end(mac)
        while len(self._last_progress) > MAX_THROTTLED:
            self._last_progress.popitem(last=False)
        return False
