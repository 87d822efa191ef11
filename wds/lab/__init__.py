"""The QEMU netboot lab (issue 7): machines that PXE-boot from wds and deploy an image.

Owns the deployment environment (:mod:`wds.lab.env`: a Linux kernel and an initramfs built from
Debian packages, whose ``/init`` (:mod:`wds.lab.initscript`) brings up the NIC and runs
:mod:`wds.lab.guest`, the receiver side inside the machine), the private lab network of
namespaces, a bridge and taps (:mod:`wds.lab.net`), the QEMU machines (:mod:`wds.lab.machines`),
one run's loop and result table (:mod:`wds.lab.report`) and ``wds lab up|run|down``
(:mod:`wds.lab.control`), whose state file lets ``down`` remove
everything ``up`` created, also after a crash. Nothing here touches the host's real network:
every lab address comes from 198.18.0.0/15.
"""
