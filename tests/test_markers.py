"""The collection check that keeps the `integration` marker on exactly the tests that use a server."""

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.conftest import pytest_collection_modifyitems


@dataclass
class Item:
    nodeid: str
    fixturenames: list[str]
    markers: set[str] = field(default_factory=set)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.markers else None


def collect(*items: Item) -> None:
    pytest_collection_modifyitems(cast(Any, None), cast(Any, list(items)))


def test_marked_tests_that_use_a_server_and_unmarked_ones_that_do_not_pass() -> None:
    collect(
        Item("a", ["postgres_server", "tmp_path"], {"integration"}),
        Item("b", ["stack", "redis_server"], {"integration"}),
        Item("c", ["tmp_path"]),
    )


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        (Item("uses_redis", ["redis_server"]), "unmarked but needs"),
        (Item("uses_nothing", ["tmp_path"], {"integration"}), "marked but needs neither"),
    ],
)
def test_a_marker_that_does_not_say_what_the_test_needs_stops_the_run(item: Item, complaint: str) -> None:
    with pytest.raises(pytest.UsageError, match=f"{item.nodeid}: {complaint}"):
        collect(Item("fine", ["tmp_path"]), item)
