"""Sans-I/O protocol state machines: bytes in, events out, bytes to send.

Nothing in this package touches a socket, a thread or an event loop. ``h2``
is HTTP/2 (RFC 9113) on the ``h2`` library, with the server's limits and its
defences against the published HTTP/2 attacks; ``ws`` is WebSocket (RFC 6455,
RFC 7692) on ``wsproto``.
"""
