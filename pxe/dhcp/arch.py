"""Client system architecture (RFC 4578 option 93) and what wds makes of it.

The values are IANA's "Processor Architecture Types" registry (shared by DHCPv4 option 93 and
DHCPv6 option 61), which superseded the table in RFC 4578 2.1. Two entries need care:

* 7 is "x64 UEFI" in the registry; RFC 4578 named it "EFI BC". 9 is "EBC" in the registry and was
  "EFI x86-64" in RFC 4578 (erratum 4624 swapped them). Real x64 firmware sends 7, and some sends
  9, so both map to :attr:`Firmware.EFI_X64` here: EFI byte code firmware does not exist in the
  field, x64 firmware announcing 9 does.
* Values from 15 on with "boot from http" are UEFI HTTP Boot clients: they want a URL, not a
  TFTP file name, and announce themselves with option 60 "HTTPClient".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ArchInfo", "Firmware", "ProcessorArch", "describe_arch"]


class ProcessorArch(enum.IntEnum):
    """IANA Processor Architecture Types (values 0..41 as registered)."""

    X86_BIOS = 0
    NEC_PC98 = 1  # deprecated
    ITANIUM = 2
    DEC_ALPHA = 3  # deprecated
    ARC_X86 = 4  # deprecated
    INTEL_LEAN_CLIENT = 5  # deprecated
    X86_UEFI = 6
    X64_UEFI = 7
    EFI_XSCALE = 8  # deprecated
    EBC = 9
    ARM32_UEFI = 10
    ARM64_UEFI = 11
    POWERPC_OPEN_FIRMWARE = 12
    POWERPC_EPAPR = 13
    POWER_OPAL_V3 = 14
    X86_UEFI_HTTP = 15
    X64_UEFI_HTTP = 16
    EBC_HTTP = 17
    ARM32_UEFI_HTTP = 18
    ARM64_UEFI_HTTP = 19
    X86_BIOS_HTTP = 20
    ARM32_UBOOT = 21
    ARM64_UBOOT = 22
    ARM32_UBOOT_HTTP = 23
    ARM64_UBOOT_HTTP = 24
    RISCV32_UEFI = 25
    RISCV32_UEFI_HTTP = 26
    RISCV64_UEFI = 27
    RISCV64_UEFI_HTTP = 28
    RISCV128_UEFI = 29
    RISCV128_UEFI_HTTP = 30
    S390_BASIC = 31
    S390_EXTENDED = 32
    MIPS32_UEFI = 33
    MIPS64_UEFI = 34
    SUNWAY32_UEFI = 35
    SUNWAY64_UEFI = 36
    LOONGARCH32_UEFI = 37
    LOONGARCH32_UEFI_HTTP = 38
    LOONGARCH64_UEFI = 39
    LOONGARCH64_UEFI_HTTP = 40
    ARM_RPIBOOT = 41

    def __str__(self) -> str:
        return f"{_IANA_NAMES[self]} ({self.value})"


# The registry's own spelling, for logs and `wds device` listings.
_IANA_NAMES: dict[ProcessorArch, str] = {
    ProcessorArch.X86_BIOS: "x86 BIOS",
    ProcessorArch.NEC_PC98: "NEC/PC98 (DEPRECATED)",
    ProcessorArch.ITANIUM: "Itanium",
    ProcessorArch.DEC_ALPHA: "DEC Alpha (DEPRECATED)",
    ProcessorArch.ARC_X86: "Arc x86 (DEPRECATED)",
    ProcessorArch.INTEL_LEAN_CLIENT: "Intel Lean Client (DEPRECATED)",
    ProcessorArch.X86_UEFI: "x86 UEFI",
    ProcessorArch.X64_UEFI: "x64 UEFI",
    ProcessorArch.EFI_XSCALE: "EFI Xscale (DEPRECATED)",
    ProcessorArch.EBC: "EBC",
    ProcessorArch.ARM32_UEFI: "ARM 32-bit UEFI",
    ProcessorArch.ARM64_UEFI: "ARM 64-bit UEFI",
    ProcessorArch.POWERPC_OPEN_FIRMWARE: "PowerPC Open Firmware",
    ProcessorArch.POWERPC_EPAPR: "PowerPC ePAPR",
    ProcessorArch.POWER_OPAL_V3: "POWER OPAL v3",
    ProcessorArch.X86_UEFI_HTTP: "x86 uefi boot from http",
    ProcessorArch.X64_UEFI_HTTP: "x64 uefi boot from http",
    ProcessorArch.EBC_HTTP: "ebc boot from http",
    ProcessorArch.ARM32_UEFI_HTTP: "arm uefi 32 boot from http",
    ProcessorArch.ARM64_UEFI_HTTP: "arm uefi 64 boot from http",
    ProcessorArch.X86_BIOS_HTTP: "pc/at bios boot from http",
    ProcessorArch.ARM32_UBOOT: "arm 32 uboot",
    ProcessorArch.ARM64_UBOOT: "arm 64 uboot",
    ProcessorArch.ARM32_UBOOT_HTTP: "arm uboot 32 boot from http",
    ProcessorArch.ARM64_UBOOT_HTTP: "arm uboot 64 boot from http",
    ProcessorArch.RISCV32_UEFI: "RISC-V 32-bit UEFI",
    ProcessorArch.RISCV32_UEFI_HTTP: "RISC-V 32-bit UEFI boot from http",
    ProcessorArch.RISCV64_UEFI: "RISC-V 64-bit UEFI",
    ProcessorArch.RISCV64_UEFI_HTTP: "RISC-V 64-bit UEFI boot from http",
    ProcessorArch.RISCV128_UEFI: "RISC-V 128-bit UEFI",
    ProcessorArch.RISCV128_UEFI_HTTP: "RISC-V 128-bit UEFI boot from http",
    ProcessorArch.S390_BASIC: "s390 Basic",
    ProcessorArch.S390_EXTENDED: "s390 Extended",
    ProcessorArch.MIPS32_UEFI: "MIPS 32-bit UEFI",
    ProcessorArch.MIPS64_UEFI: "MIPS 64-bit UEFI",
    ProcessorArch.SUNWAY32_UEFI: "Sunway 32-bit UEFI",
    ProcessorArch.SUNWAY64_UEFI: "Sunway 64-bit UEFI",
    ProcessorArch.LOONGARCH32_UEFI: "LoongArch 32-bit UEFI",
    ProcessorArch.LOONGARCH32_UEFI_HTTP: "LoongArch 32-bit UEFI boot from http",
    ProcessorArch.LOONGARCH64_UEFI: "LoongArch 64-bit UEFI",
    ProcessorArch.LOONGARCH64_UEFI_HTTP: "LoongArch 64-bit UEFI boot from http",
    ProcessorArch.ARM_RPIBOOT: "arm rpiboot",
}


class Firmware(enum.Enum):
    """The boot file families of ``[pxe.boot]``; OTHER has no boot file."""

    BIOS = "bios"
    EFI_IA32 = "efi_ia32"
    EFI_X64 = "efi_x64"
    EFI_ARM32 = "efi_arm32"
    EFI_ARM64 = "efi_arm64"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ArchInfo:
    """What one option 93 value means to wds."""

    code: int
    name: str
    firmware: Firmware
    #: a UEFI HTTP Boot client (wants a URL)
    http: bool

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


_FAMILY: dict[ProcessorArch, tuple[Firmware, bool]] = {
    ProcessorArch.X86_BIOS: (Firmware.BIOS, False),
    ProcessorArch.X86_UEFI: (Firmware.EFI_IA32, False),
    ProcessorArch.X64_UEFI: (Firmware.EFI_X64, False),
    ProcessorArch.EBC: (Firmware.EFI_X64, False),  # see the module docstring
    ProcessorArch.ARM32_UEFI: (Firmware.EFI_ARM32, False),
    ProcessorArch.ARM64_UEFI: (Firmware.EFI_ARM64, False),
    ProcessorArch.X86_UEFI_HTTP: (Firmware.EFI_IA32, True),
    ProcessorArch.X64_UEFI_HTTP: (Firmware.EFI_X64, True),
    ProcessorArch.ARM32_UEFI_HTTP: (Firmware.EFI_ARM32, True),
    ProcessorArch.ARM64_UEFI_HTTP: (Firmware.EFI_ARM64, True),
    ProcessorArch.X86_BIOS_HTTP: (Firmware.BIOS, True),
}

_HTTP_ARCHES = frozenset(a for a in ProcessorArch if "http" in _IANA_NAMES[a])


def describe_arch(code: int) -> ArchInfo:
    """Name, boot file family and HTTP-ness of an option 93 value (any 16-bit value)."""
    try:
        arch = ProcessorArch(code)
    except ValueError:
        return ArchInfo(code, "unassigned", Firmware.OTHER, False)
    firmware, http = _FAMILY.get(arch, (Firmware.OTHER, arch in _HTTP_ARCHES))
    return ArchInfo(code, _IANA_NAMES[arch], firmware, http)
