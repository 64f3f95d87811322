"""The /v1/models answers: only models the key may use."""

from typing import Annotated, Literal, TypedDict

from asgiref.sync import sync_to_async

from models_registry.models import ApiKey, ServedModel
from models_registry.selectors import loaded_model_names, served_model_for_key, served_models_for_key
from serving.errors import ModelNotFound

from ..typed_shapes import Field


class Model(TypedDict):
    id: Annotated[str, Field(help_text="The name asked for: a model's name or one of its aliases.")]
    object: Literal["model"]
    created: Annotated[int, Field(help_text="Unix time in seconds when the model was registered.")]
    owned_by: str
    loaded: Annotated[
        bool,
        Field(
            help_text="Whether a copy of the model is loaded and ready on an engine host now; if not, a request loads it."
        ),
    ]


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


def _model_object(model: ServedModel, *, loaded: bool, name: str | None = None) -> Model:
    return {
        "id": name or model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.owned_by,
        "loaded": loaded,
    }


def _models_for_key(key: ApiKey) -> tuple[list[ServedModel], set[str]]:
    models = served_models_for_key(key=key)
    return models, loaded_model_names(names=[m.name for m in models])


def _model_for_key(key: ApiKey, name: str) -> tuple[ServedModel | None, bool]:
    model = served_model_for_key(key=key, name=name)
    return model, model is not None and model.name in loaded_model_names(names=[model.name])


async def model_list(*, key: ApiKey) -> ModelList:
    models, loaded = await sync_to_async(_models_for_key)(key)
    return {"object": "list", "data": [_model_object(m, loaded=m.name in loaded) for m in models]}


async def model_detail(*, key: ApiKey, name: str) -> Model:
    model, loaded = await sync_to_async(_model_for_key)(key, name)
    if model is None:
        raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
    return _model_object(model, loaded=loaded, name=name)
