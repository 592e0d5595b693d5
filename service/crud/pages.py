"""Cursor pagination, newest first: a page starts after the row named by the client's `after` id.

A cursor is a row, not an offset, so a page stays correct while new rows arrive; ties on
`created_at` are broken by id so every row has exactly one place in the order.
"""

from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

Row = TypeVar("Row")


def newest_first_page(
    session: Session, query: Select[Row], model: Any, *, limit: int, after: Any | None
) -> tuple[list[Row], bool]:
    """One page of `query` ordered newest first, and whether more rows follow it."""
    # One row more than the page: it only tells whether more follow.
    rows = list(session.scalars(newest_first(query, model, after=after).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def newest_first(query: Select[Any], model: Any, *, after: Any | None) -> Select[Any]:
    """`query` narrowed to the rows after `after`, newest first; `model` and `after` are anything
    with a `created_at` and an `id` (a model or a table's columns; a row or bound parameters)."""
    if after is not None:
        query = query.where(
            or_(
                model.created_at < after.created_at,
                and_(model.created_at == after.created_at, model.id < after.id),
            )
        )
    return query.order_by(model.created_at.desc(), model.id.desc())
