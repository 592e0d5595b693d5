"""Plain CRUD functions with keyword-only arguments; every query takes the owner it is scoped to."""


def storable(*values: str) -> bool:
    """False for text no stored id or name can hold: PostgreSQL refuses NUL outright, so a lookup
    with one must answer "not found" instead of failing in the driver."""
    return not any("\x00" in value for value in values)
