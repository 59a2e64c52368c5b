"""The run parameters shown: the DAG's trigger form and the parameter table of docs/parameters.md.

Both come from :class:`~sciops.run.config.RunConfig`'s fields (type, default, bounds,
description, section, whether ``project.yaml`` may set it): :func:`form_params` gives the
DAG's ``Param`` s, :func:`readme_table` the table (a test fails when docs/parameters.md differs).
"""
from __future__ import annotations

import json
from typing import Any

from sciops.run.config import DEFAULTS, RunConfig

PROJECT_YAML_NOTE = "Left at its default, project.yaml's value applies."
RUN_ONLY_NOTE = "project.yaml cannot set it."

_SCHEMA_KEYS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "minLength", "pattern", "values_display",
                "section", "properties", "additionalProperties")


def form_params() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Each parameter as ``(default, JSON schema)`` for an Airflow ``Param``: the trigger form.

    The schema is pydantic's for the field (type, bounds, enum, pattern), flattened to the
    keys Airflow's form reads; the description says what the field does and how
    ``project.yaml`` and the form combine; ``project`` and ``macro`` carry ``examples`` (the projects under
    the storage root, the shipped and the projects' macros: :mod:`sciops.run.choices`). Airflow checks a run's conf against it when the
    run is created, so the form (and a REST call) refuse what the schema can say.
    """
    from sciops.run.choices import form_choices, with_choices

    full = RunConfig.model_json_schema()
    props = full["properties"]
    choices = form_choices()   # the projects and macros to pick from (never S3 at parse: sciops.run.choices)
    out = {}
    for name, field in RunConfig.model_fields.items():
        prop = dict(props[name])
        if "$ref" in prop:   # a nested model (cluster): inlined, so Airflow checks its keys and types too
            nested = full["$defs"][prop.pop("$ref").rsplit("/", 1)[-1]]
            prop.update(type="object", additionalProperties=False,
                        properties={k: {kk: vv for kk, vv in v.items() if kk != "title"}
                                    for k, v in nested["properties"].items()})
        types = []
        for alt in prop.pop("anyOf", None) or [prop]:
            types.append(alt.get("type"))
            prop.update({k: v for k, v in alt.items() if k != "type"})
        if None in types:  # e.g. a dict's additionalProperties anyOf: only the outer type matters
            types = [prop.get("type", "object")]
        schema = {k: prop[k] for k in _SCHEMA_KEYS if k in prop and k != "type"}
        schema["type"] = types[0] if len(types) == 1 else types
        if not field.is_required():
            note = PROJECT_YAML_NOTE if (field.json_schema_extra or {}).get("project_yaml", True) else RUN_ONLY_NOTE
            schema["description"] = f"{field.description}. {note}"
        else:
            schema["description"] = field.description
        if name in ("project", "macro"):   # a list to pick from that still takes a typed name
            schema = with_choices(schema, choices["projects" if name == "project" else "macros"])
        out[name] = (DEFAULTS.get(name, ""), schema)
    return out


def readme_table() -> str:
    """docs/parameters.md's parameter table (tests/unit/run/test_config.py fails when the page differs)."""
    lines = ["| parameter | section | default | project.yaml | meaning |", "|---|---|---|---|---|"]
    for name, field in RunConfig.model_fields.items():
        extra = field.json_schema_extra or {}
        default = extra.get("shown") or ("none" if DEFAULTS[name] is None else f"`{_yaml_value(DEFAULTS[name])}`")
        lines.append(f"| `{name}` | {extra.get('section', 'Run')} | {default} | "
                     f"{'yes' if extra.get('project_yaml', True) else 'no'} | {field.description.replace('*', chr(92) + '*')} |")
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, dict)) else str(value)
