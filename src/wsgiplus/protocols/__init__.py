"""Sans-I/O wire protocols: bytes in, events out."""
