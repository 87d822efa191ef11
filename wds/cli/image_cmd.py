"""``wds image info|verify|dir``: look inside a WIM file without wimlib (mostly).

The image store adds ``add/list/remove/export/split/set`` to the same ``image`` group through
``wds.cli.store_cmd.register_store_commands`` when that module exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wds.errors import WdsError

if TYPE_CHECKING:
    from rich.console import Console

    from wds.wim import VerifyReport, WimImageInfo, WimInfo

#: files at least this big get a progress bar when stderr is a terminal
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "image",
        help="inspect and verify WIM files",
        description="Inspect WIM files: header facts and images (info), integrity and structure "
        "(verify), the files of one image (dir).",
    )
    image_sub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", title="subcommands")
    p.set_defaults(handler=lambda _args: _help(p))

    info = image_sub.add_parser(
        "info",
        help="header facts and every image of a WIM",
        description="Print the header (version, compression, chunk size, GUID, part n of m, "
        "boot index, integrity table) and every image of PATH. Exit 0, or 2 when PATH is not "
        "a readable WIM.",
    )
    info.add_argument("path", metavar="PATH", type=Path, help="a .wim, .esd or .swm file")
    info.add_argument("--json", action="store_true", help="print the JSON of docs/WIM.md")
    info.set_defaults(handler=run_info)

    verify = image_sub.add_parser(
        "verify",
        help="check a WIM's integrity table and structure",
        description="Check PATH chunk by chunk against its integrity table (or, without one, "
        "the SHA-1 of every blob) and its structure; for a split set, every part. Exit 0 "
        "intact, 1 corrupt (naming the chunk and its byte range), 2 not a readable WIM.",
    )
    verify.add_argument("path", metavar="PATH", type=Path, help="a .wim file or first .swm part")
    verify.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    verify.set_defaults(handler=run_verify)

    dir_ = image_sub.add_parser(
        "dir",
        help="list the files of one image",
        description="List every path of image INDEX of PATH, one per line. Uncompressed "
        "metadata is read directly; compressed metadata is listed by wimlib-imagex.",
    )
    dir_.add_argument("path", metavar="PATH", type=Path, help="a .wim file or first .swm part")
    dir_.add_argument("index", metavar="INDEX", type=int, help="image index, 1-based")
    dir_.set_defaults(handler=run_dir)

    try:
        from wds.cli import store_cmd  # type: ignore[attr-defined, unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != "wds.cli.store_cmd":
            raise
    else:
        store_cmd.register_store_commands(image_sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _time(value: object) -> str:
    from datetime import datetime

    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "-"


def _image_rows(image: WimImageInfo) -> list[tuple[str, str]]:
    rows = [
        ("Name", image.name),
        ("Description", image.description),
        ("Display name", image.display_name or "-"),
        ("Display description", image.display_description or "-"),
        ("Flags", image.flags or "-"),
        ("Directories", f"{image.dir_count:,}"),
        ("Files", f"{image.file_count:,}"),
        ("Total bytes", f"{image.total_bytes:,}"),
        ("Hard link bytes", f"{image.hard_link_bytes:,}"),
        ("Architecture", image.architecture or "-"),
        ("Edition", image.edition_id or "-"),
        ("Product", image.product_name or "-"),
        ("Created", _time(image.creation_time)),
        ("Modified", _time(image.last_modification_time)),
    ]
    if image.languages:
        rows.append(("Languages", " ".join(image.languages)))
    if image.major_version is not None:
        version = f"{image.major_version}.{image.minor_version}.{image.build}"
        rows.append(("Version", f"{version} SP{image.sp_level} ({image.sp_build})"))
    if image.boot:
        rows.append(("Boot image", "yes"))
    return rows


def _print_info(info: WimInfo) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    header = Table(title=f"WIM {escape(info.path)}", show_header=False, title_justify="left")
    header.add_column("field", style="bold")
    header.add_column("value")
    for key, value in (
        ("Version", f"{info.version:#x}"),
        ("Compression", info.compression),
        ("Chunk size", f"{info.chunk_size:,} bytes"),
        ("GUID", info.guid),
        ("Part", f"{info.part_number} of {info.total_parts}"),
        ("Images", str(info.image_count)),
        ("Boot index", str(info.boot_index) if info.boot_index else "none"),
        ("Integrity table", "yes" if info.has_integrity_table else "no"),
        ("Pipable", "yes" if info.is_pipable else "no"),
        (
            "Flags",
            f"{info.flags:#x} "
            + " ".join(n.removeprefix("WIM_HDR_FLAG_") for n in info.flag_names),
        ),
        ("File size", f"{info.file_size:,} bytes"),
    ):
        header.add_row(key, escape(value))
    console.print(header)
    for image in info.images:
        table = Table(title=f"Image {image.index}", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in _image_rows(image):
            table.add_row(key, escape(value))
        console.print(table)


def run_info(args: argparse.Namespace) -> int:
    from wds.wim import info_to_json, read_wim_info

    info = read_wim_info(args.path)
    if args.json:
        json.dump(info_to_json(info), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_info(info)
    return 0


def _verify_with_progress(path: Path) -> VerifyReport:
    from wds.wim import find_split_set, verify_wim

    try:  # a split set is as large as all its parts
        size = sum(part.stat().st_size for part in find_split_set(path))
    except (OSError, WdsError):
        size = 0  # verify_wim reports the problem
    if not sys.stderr.isatty() or size < PROGRESS_MIN_BYTES:
        return verify_wim(path)
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"verifying {path.name}", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return verify_wim(path, progress=update)


def run_verify(args: argparse.Namespace) -> int:
    report = _verify_with_progress(args.path)
    out = sys.stdout
    if report.intact:
        if not args.quiet:
            print(f"{args.path}: intact", file=out)
            if not report.integrity_checked:
                print(
                    f"{args.path}: has no integrity table; checked its structure and "
                    "the SHA-1 of its blobs instead:",
                    file=out,
                )
            for line in report.checked:
                print(f"  checked: {line}", file=out)
        return 0
    print(f"{args.path}: CORRUPT: {report.problem}", file=out)
    if report.bad_chunk is not None and report.bad_range is not None:
        start, end = report.bad_range
        print(
            f"{args.path}: bad chunk {report.bad_chunk} covers bytes {start}..{end - 1}"
            f" of {report.bad_part}",
            file=out,
        )
    if not args.quiet:
        for line in report.checked:
            print(f"  passed: {line}", file=out)
    print(f"wds: error: {report.problem}", file=sys.stderr)
    return 1


def run_dir(args: argparse.Namespace) -> int:
    from wds.errors import WimFormatError
    from wds.wim import read_wim_info
    from wds.wim.metadata import list_image_uncompressed
    from wds.wimlib import wimlib_dir

    info = read_wim_info(args.path)
    if not 1 <= args.index <= info.image_count:
        raise WimFormatError(
            f"{args.path}: there is no image {args.index}; it has {info.image_count} image(s) "
            f"(see 'wds image info {args.path}')"
        )
    entries = list_image_uncompressed(args.path, args.index)
    paths = [e.path for e in entries] if entries is not None else wimlib_dir(args.path, args.index)
    sys.stdout.write("".join(f"{p}\n" for p in paths))
    return 0
