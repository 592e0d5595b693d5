"""Response bodies of /v1/models."""

from typing import Literal

from pydantic import BaseModel, Field


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(
        description="Unix seconds: when the model's files were written, or its job finished."
    )
    owned_by: str = Field(description="`system` for the server's models, your owner id for your jobs'.")
    source: str = Field(description="bundled | directory | hf_cache | job (one of your succeeded jobs)")
    architecture: str | None
    parameters: int | None = Field(description="Parameter count; null when the weights are not safetensors.")
    tasks: list[str] = Field(description="The job tasks this model can be fine-tuned for.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
