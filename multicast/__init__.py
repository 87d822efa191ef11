"""multicast: the image transfer protocol WMTP (docs/PROTOCOL.md is the normative description).

Delivers one install image to many clients at once over UDP multicast, verified chunk by chunk
against an Ed25519-signed manifest, with NAK repair, a carousel for late joiners, and an HTTP
range top-up for slow receivers. Layers, as everywhere in wds:

* codec -- :mod:`multicast.codec` (every datagram and the manifest, construct), and the key files
  and signing in :mod:`multicast.keys` / :mod:`multicast.manifest`;
* machines -- :mod:`multicast.sender` and :mod:`multicast.receiver`, pure (``now`` passed in,
  rng injected), their events in :mod:`multicast.events`;
* adapters -- :mod:`multicast.net` (asyncio sockets), :mod:`multicast.output` (the target file and
  its resume bitmap), :mod:`multicast.unicast` (HTTP ranges), :mod:`multicast.tool`
  (``python -m multicast send|receive``).
"""
