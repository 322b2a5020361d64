"""Connections on asyncio transports, the protocol-neutral streams, the Server."""
