"""wds's namespace lab: a LAN on one host for interop, PXE, multicast and QEMU tests."""
