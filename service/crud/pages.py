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
    rows = list(session.scalars(newest_first(query, model, limit=limit, after=after)))
    return rows[:limit], len(rows) > limit


def newest_first(query: Select[Any], model: Any, *, limit: int, after: Any | None) -> Select[Any]:
    """`query` narrowed to the rows after `after` (anything with its `created_at` and `id`), newest
    first, at most `limit` + 1 of them: the extra one only tells whether more follow."""
    if after is not None:
        query = query.where(
            or_(
                model.created_at < after.created_at,
                and_(model.created_at == after.created_at, model.id < after.id),
            )
        )
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
