"""``wds lab build-env``: the deployment environment, built from Debian packages.

Produces ``OUT/vmlinuz`` and ``OUT/initrd.img`` (a gzip'd newc cpio). Nothing is checked in: the
kernel, busybox, Python 3.11 with its standard library, python3-cryptography and construct come
from Debian bookworm packages fetched with ``apt-get download`` into a cache directory
(``~/.cache/wds/lab/debs`` by default, reused by later builds and by the test suite) and unpacked
with ``dpkg-deb -x``. Only the kernel modules the lab machines need go in (e1000 and virtio-net
NICs, virtio-blk, ext4), listed in load order in ``/etc/wds-modules``. This repository's ``wds``,
``multicast`` and ``pxe`` packages are copied in, so the guest runs the very receiver the tests
run on the host.

The build is cached: ``OUT/env.json`` records a digest of the inputs (the .deb file names, the
repository's Python sources, the init script); a build whose digest matches does nothing.
"""

from __future__ import annotations

import compileall
import gzip
import hashlib
import json
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from wds.errors import ToolError
from wds.lab import initscript

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wds" / "lab"
#: the kernel's meta package; the versioned image package it depends on is what gets fetched
KERNEL_META = "linux-image-amd64"
PACKAGES = (
    "busybox-static",
    "libc6",
    "libgcc-s1",
    "libssl3",
    "libffi8",
    "zlib1g",
    "libexpat1",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "libcrypt1",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3-cffi-backend",
    "python3-cryptography",
    "python3-construct",
)
#: kernel modules loaded by /init (their dependencies are added from modules.dep)
MODULES = ("e1000", "virtio_pci", "virtio_net", "virtio_blk", "ext4", "crc32c_generic")
#: the repository's packages copied into the initramfs
REPO_PACKAGES = ("wds", "multicast", "pxe")
#: parts of the unpacked packages the environment does not need
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/share/info",
    "usr/lib/python3.11/test",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/distutils",
    "usr/lib/python3.11/config-3.11-x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/x86_64-linux-gnu/engines-3",
)
_URI = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+\.deb) (?P<size>\d+) ")


@dataclass(frozen=True)
class EnvFiles:
    """What a build produced."""

    kernel: Path
    initrd: Path
    kernel_version: str
    rebuilt: bool


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900) -> str:
    tool = shutil.which(cmd[0])
    if tool is None:
        raise ToolError(f"{cmd[0]} not found: the lab's environment is built on Debian (apt, dpkg)")
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def kernel_package() -> str:
    """The versioned kernel image package ``linux-image-amd64`` depends on (apt-cache)."""
    out = _run(["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        match = re.match(r"\s*Depends: (linux-image-\d\S*-amd64)$", line)
        if match:
            return match.group(1)
    raise ToolError(f"apt-cache knows no kernel behind {KERNEL_META}: run apt-get update")


def fetch_debs(cache: Path) -> list[Path]:
    """Every package's .deb in ``cache/debs``, downloaded only when missing (apt-get download).

    Without the network (or apt lists), the cached .debs of the same packages are used.
    """
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(debs, 0o755)  # apt's _apt user writes there when it can
    names = [kernel_package(), *PACKAGES]
    with tempfile.TemporaryDirectory() as elsewhere:  # it names no file already in its cwd
        uris = _run(["apt-get", "download", "--print-uris", *names], cwd=Path(elsewhere))
    wanted = [m.group("file") for m in map(_URI.match, uris.splitlines()) if m]
    if len(wanted) != len(names):
        raise ToolError(f"apt-get download --print-uris named {len(wanted)} of {len(names)}")
    missing = [n for n, f in zip(names, wanted, strict=True) if not (debs / f).is_file()]
    if missing:
        _run(["apt-get", "download", *missing], cwd=debs)
    paths = [debs / f for f in wanted]
    for path in paths:
        if not path.is_file():  # apt-get download names files as --print-uris does
            raise ToolError(f"apt-get download did not write {path}")
    return paths


def _sources(root: Path) -> Iterator[Path]:
    for package in REPO_PACKAGES:
        yield from sorted((root / package).rglob("*.py"))


def inputs_digest(debs: Iterable[Path], repo: Path) -> str:
    digest = hashlib.sha256()
    for deb in sorted(debs):
        digest.update(deb.name.encode() + b"\0")
    for source in _sources(repo):
        digest.update(str(source.relative_to(repo)).encode() + b"\0" + source.read_bytes())
    digest.update(initscript.INIT.encode() + initscript.UDHCPC_SCRIPT.encode())
    return digest.hexdigest()


def _module_order(modroot: Path, wanted: Iterable[str]) -> list[str]:
    """Module paths (relative to modroot) in load order, dependencies first (modules.dep)."""
    deps: dict[str, list[str]] = {}
    for line in (modroot / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str, depth: int = 0) -> None:
        if path in order or depth > 50:
            return
        for dep in deps.get(path, []):
            visit(dep, depth + 1)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise ToolError(f"kernel module {name} is not in {modroot}")
        visit(by_name[name])
    return order


def _kernel(staging: Path, root: Path, busybox: Path) -> tuple[Path, str]:
    """Move the needed modules of the unpacked kernel into ``root``; the vmlinuz path, version."""
    (version,) = [p.name for p in (staging / "lib" / "modules").iterdir()]
    modroot = staging / "lib" / "modules" / version
    _run([str(busybox), "depmod", "-b", str(staging), version])
    order = _module_order(modroot, MODULES)
    target = root / "lib" / "modules"
    for rel in order:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(modroot / rel, target / rel)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "wds-modules").write_text("\n".join(order) + "\n")
    return staging / "boot" / f"vmlinuz-{version}", version


def _assemble(debs: list[Path], repo: Path, root: Path, staging: Path) -> tuple[Path, str]:
    kernel_deb = next(d for d in debs if d.name.startswith("linux-image-"))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(staging if deb == kernel_deb else root)])
    for rel in PRUNE:
        shutil.rmtree(root / rel, ignore_errors=True)
    vmlinuz, version = _kernel(staging, root, root / "bin" / "busybox")
    (root / "usr" / "bin" / "python3").symlink_to("python3.11")
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    for package in REPO_PACKAGES:
        shutil.copytree(
            repo / package,
            site / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
    _precompile(root)
    (root / "init").write_text(initscript.INIT)
    (root / "init").chmod(0o755)
    (root / "etc" / "udhcpc.script").write_text(initscript.UDHCPC_SCRIPT)
    (root / "etc" / "udhcpc.script").chmod(0o755)
    return vmlinuz, version


def _precompile(root: Path) -> None:
    """Byte-compile the guest's Python (unchecked-hash .pyc: the initramfs keeps no mtimes).

    dpkg-deb -x runs no postinst, so Debian's .pyc files are not there; without them every boot
    would compile the standard library and the receiver under TCG, seconds each time. Done with
    this interpreter only when it is a 3.11 too (same bytecode as the guest's python3.11).
    """
    if sys.version_info[:2] != (3, 11):
        return
    for top in ("usr/lib/python3.11", "usr/lib/python3/dist-packages"):
        compileall.compile_dir(
            root / top,
            quiet=2,
            workers=0,
            ddir=f"/{top}",
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


def _cpio_entry(out: gzip.GzipFile, name: str, mode: int, data: bytes, ino: int) -> None:
    """One newc cpio header (110 ASCII bytes), the name and the data, each padded to 4."""
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    encoded = header + name.encode() + b"\0"
    out.write(encoded + b"\0" * (-len(encoded) % 4))
    out.write(data + b"\0" * (-len(data) % 4))


def write_cpio(root: Path, path: Path) -> None:
    """``root`` as a gzip'd newc cpio archive (the kernel's initramfs format), owned by root."""
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out:
        ino = 1
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in [*sorted(dirnames), *sorted(filenames)]:
                full = Path(dirpath) / name
                rel = str(full.relative_to(root))
                info = full.lstat()
                if stat.S_ISLNK(info.st_mode):
                    data = os.readlink(full).encode()
                elif stat.S_ISREG(info.st_mode):
                    data = full.read_bytes()
                else:
                    data = b""
                _cpio_entry(out, rel, info.st_mode, data, ino)
                ino += 1
        _cpio_entry(out, "TRAILER!!!", 0, b"", 0)


def build_env(out: Path, *, cache: Path = DEFAULT_CACHE, force: bool = False) -> EnvFiles:
    """Build (or reuse) ``out/vmlinuz`` and ``out/initrd.img``."""
    repo = Path(__file__).resolve().parents[2]
    debs = fetch_debs(cache)
    digest = inputs_digest(debs, repo)
    record = out / "env.json"
    kernel, initrd = out / "vmlinuz", out / "initrd.img"
    if not force and record.is_file() and kernel.is_file() and initrd.is_file():
        try:
            known = json.loads(record.read_text())
        except ValueError:
            known = {}
        if known.get("inputs") == digest:
            return EnvFiles(kernel, initrd, str(known.get("kernel_version", "")), rebuilt=False)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wds-env-", dir=cache) as tmp:
        root, staging = Path(tmp) / "root", Path(tmp) / "kernel"
        root.mkdir()
        staging.mkdir()
        vmlinuz, version = _assemble(debs, repo, root, staging)
        shutil.copyfile(vmlinuz, out / "vmlinuz.tmp")
        write_cpio(root, out / "initrd.img.tmp")
    os.replace(out / "vmlinuz.tmp", kernel)
    os.replace(out / "initrd.img.tmp", initrd)
    record.write_text(
        json.dumps(
            {"inputs": digest, "kernel_version": version, "debs": sorted(d.name for d in debs)}
        )
    )
    return EnvFiles(kernel, initrd, version, rebuilt=True)
