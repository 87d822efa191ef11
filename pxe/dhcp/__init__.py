"""The ProxyDHCP / PXE boot server (see docs/PXE.md).

Layers: :mod:`pxe.dhcp.codec` and :mod:`pxe.dhcp.options` (bytes <-> packets and typed options),
:mod:`pxe.dhcp.arch` (option 93), :mod:`pxe.dhcp.decide` (the pure decision: a request and a
policy in, a reply or an ignore reason out), :mod:`pxe.dhcp.policy` (which boot file for which
machine: from the config and the device records of :mod:`wds.devices`) and
:mod:`pxe.dhcp.server` (the asyncio adapter on ports 67 and 4011).
"""
