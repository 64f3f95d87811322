"""The /v1/models answers: only models the key may use."""

from typing import Annotated, Literal, TypedDict

from asgiref.sync import sync_to_async

from models_registry.models import ApiKey, ServedModel
from models_registry.selectors import served_model_for_key, served_models_for_key
from serving.errors import ModelNotFound

from ..typed_shapes import Field


class Model(TypedDict):
    id: Annotated[str, Field(help_text="The name asked for: a model's name or one of its aliases.")]
    object: Literal["model"]
    created: Annotated[int, Field(help_text="Unix time in seconds when the model was registered.")]
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


def _model_object(model: ServedModel, name: str | None = None) -> Model:
    return {
        "id": name or model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.owned_by,
    }


async def model_list(*, key: ApiKey) -> ModelList:
    models = await sync_to_async(served_models_for_key)(key=key)
    return {"object": "list", "data": [_model_object(m) for m in models]}


async def model_detail(*, key: ApiKey, name: str) -> Model:
    model = await sync_to_async(served_model_for_key)(key=key, name=name)
    if model is None:
        raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
    return _model_object(model, name)
