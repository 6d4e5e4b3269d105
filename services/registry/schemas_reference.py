"""Request and response models of the reference data: areas and service types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.registry.reference import (
    CODE_LIST_VERSION_MAX,
    CODE_PATTERN,
    DESCRIPTION_MAX,
    NAME_MAX,
    SERVICE_TYPE_CODE_MAX,
)
from services.registry.schemas import StrictModel

Dimension = Literal["economic", "social", "psychosocial", "immediate"]

CODE_REGEX = f"^{CODE_PATTERN.pattern}$"


class AreaRef(BaseModel):
    """An ancestor of an area."""

    code: str = Field(examples=["ML-BKO"])
    name: str = Field(examples=["Bamako"])
    level: str = Field(examples=["district"])


class AreaRead(BaseModel):
    code: str = Field(examples=["ML-BKO-01"])
    name: str = Field(examples=["Commune I"])
    level: str = Field(
        description="country, region, district, cercle, commune, or a level of an imported list.",
        examples=["commune"],
    )
    depth: int = Field(
        description="How specific the area is, as routing ranks coverage: country 0, region "
        "or district 1, cercle 2, commune 3; another level is one below its parent.",
        examples=[3],
    )
    parent_code: str | None = Field(examples=["ML-BKO"])
    code_list_version: str = Field(examples=["ml-iso3166-2+cercles-2016"])


class AreaDetail(AreaRead):
    ancestors: list[AreaRef] = Field(
        description="The areas above this one, from the root down.",
        examples=[
            [
                {"code": "ML", "name": "Mali", "level": "country"},
                {"code": "ML-BKO", "name": "Bamako", "level": "district"},
            ]
        ],
    )


class AreaImportResult(BaseModel):
    imported: int = Field(description="Rows of the file added or updated.", examples=[76])
    code_list_version: str = Field(
        max_length=CODE_LIST_VERSION_MAX, examples=["ml-iso3166-2+cercles-2016"]
    )


class ServiceTypeCreate(StrictModel):
    code: str = Field(
        min_length=1,
        max_length=SERVICE_TYPE_CODE_MAX,
        pattern=CODE_REGEX,
        description="Letters, digits, `.`, `_` and `-`; by habit `<dimension>.<name>`.",
        examples=["economic.agricultural_inputs"],
    )
    name: str = Field(min_length=1, max_length=NAME_MAX, examples=["Agricultural inputs"])
    dimension: Dimension = Field(examples=["economic"])
    description: str = Field(
        default="",
        max_length=DESCRIPTION_MAX,
        examples=["Seeds, tools and fertiliser for a farming activity"],
    )


class ServiceTypeRead(BaseModel):
    code: str = Field(examples=["economic.agricultural_inputs"])
    name: str = Field(examples=["Agricultural inputs"])
    dimension: Dimension = Field(examples=["economic"])
    description: str = Field(examples=["Seeds, tools and fertiliser for a farming activity"])
