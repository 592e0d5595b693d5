"""How many live event streams each owner holds open in this API process, bounded.

Each open stream costs a connection and a database read every poll, so one owner cannot open
streams without end; a browser tab, a `deltatune jobs watch` or two fit well under the limit. The
count is per process (an API behind several processes allows the limit in each): enough to stop a
runaway client without a shared store.
"""

import threading
from collections import Counter


class StreamSlots:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: Counter[str] = Counter()
        self._lock = (
            threading.Lock()
        )  # routes take slots on worker threads, streams give them back on the loop

    def take(self, owner_id: str) -> bool:
        """A slot for one more stream of `owner_id`; False when the owner already holds `limit`."""
        with self._lock:
            if self._open[owner_id] >= self._limit:
                return False
            self._open[owner_id] += 1
            return True

    def give_back(self, owner_id: str) -> None:
        with self._lock:
            self._open[owner_id] -= 1
            if self._open[owner_id] <= 0:
                del self._open[owner_id]

    def held(self, owner_id: str) -> int:
        with self._lock:
            return self._open[owner_id]
