"""RFC 2347 option negotiation for a read request: what the client asked, what we grant.

Pure functions. Unknown options are ignored (RFC 2347: "the server ... should ignore options it does
not recognise"); a known option with a malformed or out-of-range value is ignored too, which leaves
the transfer at the RFC 1350 default for it -- never a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 2348: blksize 8..65464.
BLKSIZE_MIN = 8
BLKSIZE_MAX = 65464
#: IPv4 header (20) + UDP header (8) + TFTP DATA header (4): a block fits an MTU-sized datagram.
DATAGRAM_OVERHEAD = 32
#: RFC 2349: timeout 1..255 seconds.
TIMEOUT_MIN, TIMEOUT_MAX = 1, 255
#: RFC 7440: windowsize 1..65535.
WINDOWSIZE_MIN, WINDOWSIZE_MAX = 1, 65535
#: RFC 2349: tsize is a file size; no file we serve is larger than this many digits.
_NUMBER = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True)
class OptionLimits:
    """What this server grants at most: config caps, MTU of the interface the request used."""

    max_blksize: int = BLKSIZE_MAX
    max_windowsize: int = 64
    mtu: int | None = None


@dataclass(frozen=True)
class Negotiated:
    """The transfer parameters after negotiation, and the OACK options (empty: send no OACK)."""

    blksize: int = 512
    windowsize: int = 1
    timeout: float | None = None  # the client's timeout option, seconds
    tsize: int | None = None  # the size we report, when the client asked
    oack: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()  # "name=value: why", for the DEBUG log


def negotiate(
    options: tuple[tuple[str, str], ...], *, file_size: int, limits: OptionLimits
) -> Negotiated:
    """Grant the options of a read request. ``file_size`` is the size on the wire (netascii)."""
    blksize, windowsize, timeout, tsize = 512, 1, None, None
    oack: list[tuple[str, str]] = []
    ignored: list[str] = []
    seen: set[str] = set()
    for raw_name, value in options:
        name = raw_name.lower()  # RFC 2347: option names are case-insensitive
        if name in seen:
            ignored.append(f"{raw_name}={value}: repeated")
            continue
        seen.add(name)
        number = int(value) if _NUMBER.fullmatch(value) else None
        if name not in ("blksize", "windowsize", "timeout", "tsize"):
            ignored.append(f"{raw_name}={value}: unknown option")
        elif number is None:
            ignored.append(f"{raw_name}={value}: not a number")
        elif name == "blksize":
            if number < BLKSIZE_MIN:  # RFC 2348: 8..65464; a larger value is granted smaller
                ignored.append(f"{raw_name}={value}: below {BLKSIZE_MIN}")
                continue
            blksize = min(number, BLKSIZE_MAX, limits.max_blksize)
            if limits.mtu is not None:
                blksize = min(blksize, max(BLKSIZE_MIN, limits.mtu - DATAGRAM_OVERHEAD))
            oack.append((raw_name, str(blksize)))
        elif name == "windowsize":
            if number < WINDOWSIZE_MIN:  # RFC 7440: 1..65535; a larger value is granted smaller
                ignored.append(f"{raw_name}={value}: below {WINDOWSIZE_MIN}")
                continue
            windowsize = min(number, WINDOWSIZE_MAX, limits.max_windowsize)
            oack.append((raw_name, str(windowsize)))
        elif name == "timeout":
            if not TIMEOUT_MIN <= number <= TIMEOUT_MAX:  # RFC 2349: 1..255, else ignored
                ignored.append(f"{raw_name}={value}: outside {TIMEOUT_MIN}..{TIMEOUT_MAX}")
                continue
            timeout = float(number)
            oack.append((raw_name, str(number)))
        else:  # RFC 2349: in a RRQ the client sends tsize 0 and the server answers the size
            tsize = file_size
            oack.append((raw_name, str(file_size)))
    return Negotiated(blksize, windowsize, timeout, tsize, tuple(oack), tuple(ignored))


def format_options(options: tuple[tuple[str, str], ...]) -> str:
    """``blksize=1456 tsize=0`` for logs; '-' when there are none."""
    return " ".join(f"{k}={v}" for k, v in options) or "-"
