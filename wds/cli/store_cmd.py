"""``wds image add|list|remove|export|split|set``: manage the image store.

The ``image`` command group itself belongs to :mod:`wds.cli.image_cmd`, which calls
:func:`register_store_commands` with its subparsers.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wds.config import ServerConfig, load_config
from wds.errors import StoreError
from wds.store import BOOT_ARCHES, ImageRef, ImageStore, StoredImage
from wds.store.model import entry_to_json
from wds.wimlib import WIM_COMPRESSION_TYPES

#: the config read when neither --store nor --config is given, if it exists
DEFAULT_CONFIG = Path("config/wds.toml")

REF_HELP = "GROUP/NAME for an install image, boot/ARCH/NAME for a boot image"

Handler = Callable[[argparse.Namespace], int]


def register_store_commands(sub: Any) -> None:
    """Add the store commands to the ``wds image`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("store")
    where.add_argument(
        "--store",
        metavar="DIR",
        type=Path,
        help="the image store directory (default: [server] store of --config)",
    )
    where.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help=f"config file whose [server] store is used (default: {DEFAULT_CONFIG} if present, "
        f"else {ServerConfig().store})",
    )
    _add_add(sub, common)
    _add_list(sub, common)
    p = _parser(sub, common, "remove", "remove a stored WIM and its file", _remove)
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    _add_export(sub, common)
    _add_split(sub, common)
    _add_set(sub, common)


def _parser(
    sub: Any, common: argparse.ArgumentParser, name: str, help: str, handler: Handler
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_wrap(
            "exit status: 0 done, 1 refused (exists, unknown, damaged WIM, locked store), "
            "2 unreadable input or bad usage. See docs/STORE.md."
        ),
    )
    p.set_defaults(handler=_os_errors(handler))
    return p


def _add_add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, common, "add", "add a WIM to the image store", _add)
    p.description = _wrap(
        "Add a WIM to the image store: an install image into an image group, or a boot image "
        "for one client architecture.\n\n"
        "  wds image add install.wim --group win11              (all images, copied as is)\n"
        "  wds image add install.wim --group win11 --index 6 --name pro\n"
        "  wds image add boot.wim --boot --arch x64\n\n"
        "The WIM is copied (or, with --index, exported by wimlib-imagex) into the store, "
        "verified, and only then listed; a WIM that fails verification is refused with the "
        "reason and the store is left unchanged."
    )
    p.add_argument("path", metavar="PATH", type=Path, help="the .wim file to add")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--group", metavar="G", help="install image group (WDS image group)")
    kind.add_argument("--boot", action="store_true", help="add a boot image (needs --arch)")
    p.add_argument("--arch", choices=BOOT_ARCHES, help="client architecture of a boot image")
    p.add_argument(
        "--name", metavar="N", help="store name (default: the image's name, else the file name)"
    )
    p.add_argument("--index", metavar="I", type=int, help="add only image I (1-based) as a new WIM")
    p.add_argument(
        "--default", action="store_true", help="boot image: answer its architecture with it"
    )


def _add_list(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, common, "list", "list the images in the store", _list)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--group", metavar="G", help="only this install group")
    p.add_argument("--boot", action="store_true", help="only boot images")
    p.add_argument(
        "--server",
        metavar="URL",
        help="ask the running server's admin API (e.g. http://127.0.0.1:8081) instead of "
        "reading the store directory",
    )
    p.add_argument(
        "--token-file", metavar="FILE", help="admin token for --server (default: [http] token_file)"
    )


def _add_export(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, common, "export", "export a stored image to a new WIM file", _export)
    p.description = _wrap(
        "Export a stored WIM, or one image of it (REF:INDEX), to the new file DEST with "
        "wimlib-imagex export. Only data the images use is written, so the space deleted "
        "images left behind is dropped (as ImageX /export). DEST is never overwritten."
    )
    p.add_argument("ref", metavar="REF[:INDEX]", help=REF_HELP)
    p.add_argument("dest", metavar="DEST", type=Path, help="new .wim file to write")
    p.add_argument(
        "--compress", choices=WIM_COMPRESSION_TYPES, help="compression (default: the source's)"
    )
    p.add_argument("--no-integrity", action="store_true", help="do not write an integrity table")


def _add_split(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, common, "split", "split a stored WIM into .swm parts for media", _split)
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("dest", metavar="DEST.swm", type=Path, help="first part; then DEST2.swm ...")
    p.add_argument(
        "--part-size",
        metavar="MiB",
        type=float,
        required=True,
        help="largest part size in MiB (e.g. 4000 for FAT32 media)",
    )


def _add_set(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, common, "set", "change an image's name, description, flags, boot index", _set)
    p.description = _wrap(
        "Change a stored image. --name, --description and --flags change the image's XML "
        "(as ImageX /info); a WIM holding several images needs REF:INDEX for them. "
        "--boot-index picks the WIM's bootable image (0 = none). --rename changes the store "
        "name, --default makes a boot image the one answered for its architecture."
    )
    p.add_argument("ref", metavar="REF[:INDEX]", help=REF_HELP)
    p.add_argument("--name", metavar="TEXT", help="new image name (XML NAME)")
    p.add_argument("--description", metavar="TEXT", help="new description (XML DESCRIPTION)")
    p.add_argument("--flags", metavar="TEXT", help="new flags, e.g. Professional (XML FLAGS)")
    p.add_argument("--boot-index", metavar="I", type=int, help="make image I bootable")
    p.add_argument("--rename", metavar="NEW", help="new store name")
    p.add_argument("--default", action="store_true", help="boot image: make it the default")


def _wrap(text: str) -> str:
    """Fill each paragraph to the terminal's usual width; indented lines are examples, kept."""
    return "\n\n".join(
        para if para.startswith("  ") else textwrap.fill(para, 79) for para in text.split("\n\n")
    )


def _os_errors(handler: Handler) -> Handler:
    """Turn a file system failure (permissions, a full disk) into a one-line refusal."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise StoreError(f"{where}{exc.strerror or exc}; nothing was changed") from None

    return run


def store_root(args: argparse.Namespace) -> Path:
    """--store, else --config's [server] store, else config/wds.toml's, else the default."""
    if args.store is not None:
        return Path(args.store)
    if args.config is not None:
        return load_config(args.config).server.store
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG).server.store
    return ServerConfig().store


def _open(args: argparse.Namespace, *, create: bool = False) -> ImageStore:
    return ImageStore.open(store_root(args), create=create)


def _open_for(args: argparse.Namespace) -> ImageStore:
    """Check the reference before the store: a typo is a usage error (2) wherever it points."""
    ImageRef.parse(args.ref)
    return _open(args)


def _add(args: argparse.Namespace) -> int:
    if args.boot and args.arch is None:
        raise _usage("--boot needs --arch (one of " + ", ".join(BOOT_ARCHES) + ")")
    if args.arch is not None and not args.boot:
        raise _usage("--arch is for boot images; add --boot, or use --group for install images")
    if args.default and not args.boot:
        raise _usage("--default is for boot images")
    store = _open(args, create=True)
    entry = store.add(
        args.path,
        group=args.group,
        arch=args.arch,
        name=args.name,
        index=args.index,
        default=args.default,
    )
    print(f"added {entry.ref}: {_images_summary(entry)}, {entry.size} bytes")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.server:
        items, where = _server_images(args)
    else:
        store = _open(args)
        items = []
        for e in store.list_images():
            item = entry_to_json(e)
            item["answered"] = e.kind == "boot" and store.boot_image(e.group) == e.path
            items.append(item)
        where = f"image store {store.root}"
    wanted = [
        item
        for item in items
        if (not args.boot or item["kind"] == "boot")
        and (
            args.group is None
            or (item["kind"] == "install" and item["group"].lower() == args.group.lower())
        )
    ]
    if args.json:
        json.dump(wanted, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    _print_table(where, wanted)
    return 0


def _server_images(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The images the running server's admin API lists (what its sessions can use)."""
    from wds.web.client import AdminClient

    token_file = args.token_file
    if token_file is None and (args.config is not None or DEFAULT_CONFIG.is_file()):
        token_file = load_config(args.config or DEFAULT_CONFIG).http.token_file
    url = args.server if "://" in args.server else "http://" + args.server
    data = AdminClient(url, token_file=token_file).get("/api/v1/images")
    items: list[dict[str, Any]] = list(data.get("images", []))
    for item in items:
        item.setdefault("answered", bool(item.get("default")))
    return items, f"image store of the server at {url}"


def _print_table(where: str, items: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=where, title_justify="left")
    for column in ("reference", "index", "image name", "flags", "boot", "size", "added"):
        table.add_column(column, no_wrap=column in ("reference", "size"))
    for item in items:
        ref = item["ref"] + (" (default)" if item["answered"] else "")
        for n, image in enumerate(item["images"]):
            table.add_row(
                ref if n == 0 else "",
                str(image["index"]),
                image["name"],
                image["flags"],
                "*" if image["index"] == item["boot_index"] else "",
                f"{item['size']:,}" if n == 0 else "",
                item["added"][:16].replace("T", " ") if n == 0 else "",
            )
    console = Console()
    if items:
        console.print(table)
    else:
        console.print(f"{where} is empty; add images with 'wds image add'")


def _remove(args: argparse.Namespace) -> int:
    entry = _open_for(args).remove(args.ref)
    print(f"removed {entry.ref}")
    return 0


def _export(args: argparse.Namespace) -> int:
    dest = _open_for(args).export(
        args.ref, args.dest, compress=args.compress, integrity=not args.no_integrity
    )
    print(f"exported {args.ref} to {dest} ({dest.stat().st_size} bytes)")
    return 0


def _split(args: argparse.Namespace) -> int:
    parts = _open_for(args).split(args.ref, args.dest, args.part_size)
    print(f"split {args.ref} into {len(parts)} parts:")
    for part in parts:
        print(f"  {part} ({part.stat().st_size} bytes)")
    return 0


def _set(args: argparse.Namespace) -> int:
    entry = _open_for(args).set_info(
        args.ref,
        name=args.name,
        description=args.description,
        flags=args.flags,
        boot_index=args.boot_index,
        rename=args.rename,
        default=args.default,
    )
    print(f"changed {ImageRef.parse(args.ref)} -> {entry.ref}: {_images_summary(entry)}")
    return 0


def _images_summary(entry: StoredImage) -> str:
    names = ", ".join(f"{i.index} {i.name!r}" for i in entry.images[:4])
    more = f" and {len(entry.images) - 4} more" if len(entry.images) > 4 else ""
    return f"{len(entry.images)} image(s) [{names}{more}], boot index {entry.boot_index}"


def _usage(message: str) -> StoreError:
    from wds.store import StoreInputError

    return StoreInputError(message)
