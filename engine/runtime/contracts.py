"""Handoff contracts: the field schemas an agent declares for what it accepts and what it returns."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from engine.hierarchy.schema import ContractField

_PY_TYPES: dict[str, Any] = {
    "string": str, "number": float, "integer": int, "boolean": bool, "list": list, "object": dict, "any": Any,
}


class ContractViolation(Exception):
    """Data that does not match a contract; the message lists every bad field."""


class _Open(BaseModel):
    # Extra fields are tolerated: a contract says what must be there, not what may not be.
    model_config = ConfigDict(extra="allow")


class Contract:
    __slots__ = ("_model", "fields")

    def __init__(self, name: str, fields: dict[str, ContractField]) -> None:
        self.fields = fields
        definitions: dict[str, Any] = {}
        for field_name, spec in fields.items():
            py_type = _PY_TYPES[spec.type]
            definitions[field_name] = (py_type, ...) if spec.required else (py_type | None, None)
        self._model = create_model(f"Contract_{name}", __base__=_Open, **definitions)

    def validate(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ContractViolation(f"expected a JSON object with fields {', '.join(self.fields)}")
        try:
            return self._model.model_validate(data).model_dump()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ContractViolation(problems) from None

    def validate_text(self, text: str | None) -> dict[str, Any]:
        """Parse a model's final answer as JSON and validate it."""
        try:
            data = json.loads(text or "")
        except ValueError:
            raise ContractViolation("the answer is not JSON; expected an object with fields "
                                    + ", ".join(self.fields)) from None
        return self.validate(data)

    def json_schema(self) -> dict[str, Any]:
        return self._model.model_json_schema()
