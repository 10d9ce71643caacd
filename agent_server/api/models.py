"""The bases of REST bodies and answers: camelCase on the wire, strict types.

A body (:class:`RestBody`) refuses unknown fields, and accepts only the camelCase names (422
naming the field and the accepted names), so a misspelt option is an error, not a silent
default. Its text must be storable (no NUL, no lone surrogate: :mod:`protocol.text`) and its
numbers finite. An answer (:class:`RestModel`) is built by field name and sent in camelCase.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from protocol.text import PROBLEM, unstorable


class RestModel(BaseModel):
    model_config = ConfigDict(
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )


class RestBody(RestModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=False, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        where = unstorable(value)
        if where is not None:
            raise ValueError(f"{where + ': ' if where else ''}{PROBLEM}")
        return value
