"""The API's engine: JSON columns read back exactly, its pool sized by the connections asked for."""

import math
from pathlib import Path

from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

from core.db import make_engine, read_json


def test_read_json_reads_what_orjson_refuses() -> None:
    assert read_json(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert read_json("[18446744073709551617]") == [2**64 + 1]  # beyond 64 bits: orjson gives a float
    assert read_json(b'{"seed": -18446744073709551617}') == {"seed": -(2**64) - 1}
    assert math.isnan(read_json('{"loss": NaN}')["loss"])  # what json.dumps writes to SQLite


def test_json_columns_round_trip_and_the_pool_is_sized(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", connections=3)
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("data", JSON))
    table.metadata.create_all(engine)
    stored = {"spec": {"method": {"type": "lora", "r": 8}}, "big": 2**70, "nan": float("nan")}
    with engine.begin() as connection:
        connection.execute(insert(table).values(id=1, data=stored))
    with engine.connect() as connection:
        read = connection.scalar(select(table.c.data))
    assert read["spec"] == stored["spec"] and read["big"] == 2**70 and math.isnan(read["nan"])
    assert engine.pool.size() == 3 and engine.pool._max_overflow == 3  # type: ignore[attr-defined]
    engine.dispose()
