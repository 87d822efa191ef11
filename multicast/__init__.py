"""multicast: the image transfer protocol (manifest, chunked multicast data path, repair, unicast).

Owns the wire format and the pure sender and receiver state machines that deliver an install image
to many clients at once, verified chunk by chunk, plus their asyncio adapters. Not built yet:
see the open image-streaming issue and docs/ARCHITECTURE.md for the plan.
"""
