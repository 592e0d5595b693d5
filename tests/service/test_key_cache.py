"""The key cache: only accepted keys, for at most the TTL from their database read, a bounded count."""

from service.key_cache import AuthenticatedOwner, KeyCache

ALICE = AuthenticatedOwner(id="owner-a", name="alice")
BOB = AuthenticatedOwner(id="owner-b", name="bob")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_owner_is_kept_until_the_ttl_from_its_read_not_from_its_last_use() -> None:
    clock = Clock()
    keys = KeyCache(ttl_seconds=10, clock=clock)
    keys.remember("hash-a", ALICE)
    for _ in range(9):  # used every second: use does not extend it
        clock.now += 1
        assert keys.get("hash-a") == ALICE
    clock.now += 0.999
    assert keys.get("hash-a") == ALICE
    clock.now += 0.001
    assert keys.get("hash-a") is None
    assert len(keys) == 0


def test_each_key_hash_gives_its_own_owner() -> None:
    keys = KeyCache(ttl_seconds=10, clock=Clock())
    keys.remember("hash-a", ALICE)
    keys.remember("hash-b", BOB)
    assert (keys.get("hash-a"), keys.get("hash-b"), keys.get("hash-c")) == (ALICE, BOB, None)


def test_at_most_max_keys_are_kept_least_recently_used_out_first() -> None:
    keys = KeyCache(ttl_seconds=10, max_keys=2, clock=Clock())
    keys.remember("hash-a", ALICE)
    keys.remember("hash-b", BOB)
    assert keys.get("hash-a") == ALICE  # now b is the least recently used
    keys.remember("hash-c", BOB)
    assert len(keys) == 2
    assert keys.get("hash-b") is None and keys.get("hash-a") == ALICE and keys.get("hash-c") == BOB


def test_a_ttl_of_zero_keeps_nothing() -> None:
    keys = KeyCache(ttl_seconds=0, clock=Clock())
    keys.remember("hash-a", ALICE)
    assert keys.get("hash-a") is None and len(keys) == 0
