"""Seeds that are pure functions of a position in the data, the same in every process and every run
(Python's `hash` of a str is salted per process)."""

import hashlib


def stable_seed(*parts) -> int:
    """A 63-bit seed from a tuple of ints and strings."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
