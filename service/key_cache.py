"""Which owner an API key belongs to, remembered for a few seconds by each API process.

Every request authenticates, and asking the database each time cost a round trip and a tenth of a
`GET /v1/jobs` (a py-spy profile). Only keys the database accepted are remembered, by their SHA-256
(never the key itself), for `api_key_cache_seconds` counted from that database read, not from the
last use: a key revoked (`deltatune keys revoke`, another process) stops working in every API
process at most that long after. Unknown and revoked keys are never remembered, so guessing keys
fills no memory (each guess costs a query, as before), and at most `max_keys` keys are kept, the
least recently used out first.

Used from the event loop only (service/deps.py), so it needs no lock.
"""

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class AuthenticatedOwner:
    """The owner a request's key belongs to: its id scopes every query, its name is in model names."""

    id: str
    name: str


class KeyCache:
    def __init__(
        self, *, ttl_seconds: float, max_keys: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._owners: OrderedDict[str, tuple[float, AuthenticatedOwner]] = OrderedDict()

    def get(self, key_hash: str) -> AuthenticatedOwner | None:
        """The owner read from the database less than the TTL ago, or None: ask the database."""
        found = self._owners.get(key_hash)
        if found is None:
            return None
        read_at, owner = found
        if self._clock() - read_at >= self._ttl:
            del self._owners[key_hash]
            return None
        self._owners.move_to_end(key_hash)
        return owner

    def remember(self, key_hash: str, owner: AuthenticatedOwner) -> None:
        """Keep an owner the database just gave for an active key."""
        if self._ttl <= 0:
            return
        self._owners[key_hash] = (self._clock(), owner)
        self._owners.move_to_end(key_hash)
        while len(self._owners) > self._max_keys:
            self._owners.popitem(last=False)

    def __len__(self) -> int:
        return len(self._owners)
