"""pxe: the network-boot protocols.

Owns ProxyDHCP (the PXE boot server, to come) and TFTP (:mod:`pxe.tftp`). Each protocol is split in
three layers (see ../shared/STYLE.md in the project's lab notes and docs/ARCHITECTURE.md):

* ``codec``   -- bytes to frozen dataclasses and back; the only place construct is used;
* ``machine`` -- a pure state machine, time passed in, no sockets, no asyncio;
* ``server``  -- the asyncio adapter that feeds datagrams and timers to the machine.

What to answer (which file for which path, which boot file for which machine) sits behind small
``typing.Protocol`` policies that the image store and the config implement.
"""
