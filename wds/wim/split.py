"""Split WIM sets (``.swm``): find every part next to the first and check they belong together.

wimsplit and DISM name the parts ``NAME.swm``, ``NAME2.swm``, ``NAME3.swm``, ...: part 1 keeps the
plain name and part *n* gets the number appended to the stem. Every part carries the same GUID and
the same total part count, and its own part number.
"""

from __future__ import annotations

from pathlib import Path

from wds.errors import WimFormatError
from wds.wim.reader import WimPart, guid_text, read_part_header


def part_path(first: Path, number: int) -> Path:
    """Where part ``number`` of the set whose first part is ``first`` lives."""
    if number == 1:
        return first
    return first.with_name(f"{first.stem}{number}{first.suffix}")


def _first_part_path(path: Path, part_number: int) -> Path:
    if part_number == 1:
        return path
    suffix = str(part_number)
    if not path.stem.endswith(suffix) or path.stem == suffix:
        raise WimFormatError(
            f"{path}: is part {part_number} of a split WIM but its name does not end in "
            f"{suffix}; pass the first part (NAME.swm)"
        )
    return path.with_name(path.stem[: -len(suffix)] + path.suffix)


def split_set_parts(path: Path) -> tuple[WimPart, ...]:
    """The checked headers of every part of the set ``path`` belongs to, in part order."""
    path = Path(path)
    given = read_part_header(path)
    total = given.header.total_parts
    if total == 1:
        return (given,)
    first = _first_part_path(path, given.header.part_number)
    parts: list[WimPart] = []
    for number in range(1, total + 1):
        candidate = part_path(first, number)
        if candidate == path:
            part = given
        elif not candidate.exists():
            raise WimFormatError(
                f"{first}: split WIM part {number} of {total} is missing: expected "
                f"{candidate}; put every part of the set in the same directory"
            )
        else:
            part = read_part_header(candidate)
        h = part.header
        if h.guid != given.header.guid:
            raise WimFormatError(
                f"{candidate}: belongs to another split set (GUID {guid_text(h.guid)}, "
                f"expected {guid_text(given.header.guid)})"
            )
        if h.part_number != number or h.total_parts != total:
            raise WimFormatError(
                f"{candidate}: says it is part {h.part_number} of {h.total_parts}, "
                f"expected part {number} of {total}"
            )
        parts.append(part)
    return tuple(parts)


def find_split_set(path: Path) -> tuple[Path, ...]:
    """Every part of the split set ``path`` belongs to (just ``(path,)`` for a whole WIM).

    Raises WimFormatError naming a missing part, a part with another GUID or a wrong number.
    """
    return tuple(p.path for p in split_set_parts(path))
