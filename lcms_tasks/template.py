"""A commented YAML config template generated from the config schema.

Every field's description becomes a comment, every default its value, so the
template never drifts from what the validator accepts.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

#: The example land cover legend (the demo's): ids, names, colours, and the kinds change rules refer to.
LAND_COVER_EXAMPLE: list[dict[str, Any]] = [
    {"id": 1, "name": "cropland", "color": "#f4d03f"},
    {"id": 2, "name": "forest", "color": "#1e8449"},
    {"id": 3, "name": "grassland", "color": "#82e0aa"},
    {"id": 4, "name": "water", "color": "#2e86c1"},
    {"id": 5, "name": "built-up", "color": "#c0392b", "kind": "built_up"},
    {"id": 6, "name": "bare land", "color": "#d7bde2", "kind": "bare_land"},
    {"id": 7, "name": "shrubland", "color": "#a04000"},
    {"id": 8, "name": "wetland", "color": "#48c9b0"},
]

# Example values for required fields (they have no default to show).
_EXAMPLES: dict[str, Any] = {
    "project": "my-country",
    "aoi": {
        "geojson": {
            "type": "Polygon",
            "coordinates": [[[14.50, 46.00], [14.56, 46.00], [14.56, 46.04], [14.50, 46.04], [14.50, 46.00]]],
        },
        "crs": "EPSG:4326",
    },
    "seasons": {"2023": {"start": "2023-03-01", "end": "2023-10-31"}},
    "legends": {
        "land_cover": LAND_COVER_EXAMPLE,
        "crop_type": [],
    },
}


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _emit(model: type[BaseModel], indent: int, lines: list[str], examples: dict[str, Any]) -> None:
    pad = "  " * indent
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        if info.description:
            lines.append(f"{pad}# {info.description}")
        sub = _nested_model(info)
        if name in examples and not isinstance(examples[name], dict | list):
            lines.append(f"{pad}{name}: {_scalar(examples[name])}")
        elif name in examples:
            dumped = yaml.safe_dump(
                {name: json.loads(json.dumps(examples[name]))}, sort_keys=False, width=110, default_flow_style=None
            )
            lines.extend(pad + line for line in dumped.rstrip().splitlines())
        elif sub is not None and not sub.model_fields:
            lines.append(f"{pad}{name}: {{}}")
        elif sub is not None:
            lines.append(f"{pad}{name}:")
            _emit(sub, indent + 1, lines, {})
        else:
            default = info.get_default(call_default_factory=True)
            if default is PydanticUndefined:
                default = None
            default = to_jsonable_python(default)
            lines.append(f"{pad}{name}: {_scalar(default)}")


def _nested_model(info: FieldInfo) -> type[BaseModel] | None:
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    # A tagged union (e.g. the imagery source): show the default variant with its options.
    default = info.get_default(call_default_factory=True)
    return type(default) if isinstance(default, BaseModel) else None


def config_template() -> str:
    """The commented template as YAML text (it validates as is)."""
    from lcms_tasks.config import ProjectConfig

    lines = ["# LCMS project config (generated from the schema by `lcms config template`).", ""]
    _emit(ProjectConfig, 0, lines, _EXAMPLES)
    return "\n".join(lines) + "\n"
