"""Response bodies of /v1/methods."""

from typing import Literal

from pydantic import BaseModel, Field

from tuning.spec.catalogue import CatalogueItem


class MethodList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CatalogueItem] = Field(
        description="Every method, then every part that composes with any method."
    )
