"""/v1/methods: the method catalogue, generated from the models that validate job specs."""

from fastapi import APIRouter

from service.deps import CurrentOwner
from service.schemas.common import error_responses
from service.schemas.methods import MethodList
from tuning.spec.catalogue import catalogue

router = APIRouter(prefix="/v1/methods", tags=["methods"], responses=error_responses(401, 500, 503))


@router.get("")
def list_methods(owner: CurrentOwner) -> MethodList:
    """List every method and composable part: description, paper and the JSON schema of its options."""
    return MethodList(data=list(catalogue()))
