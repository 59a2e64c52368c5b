"""pydantic's validation errors as the run parameters' problems: ``(field, what to do)``.

The messages name the field (``cluster.<key>`` inside the ``cluster`` parameter) and say what a
value must be, with the field's own description where a bound was crossed. ``model`` is the
model that was validated (``RunConfig``), passed in: ``sciops.run.config`` calls this.
"""
from __future__ import annotations

from pydantic import BaseModel, ValidationError

from sciops.run.bounded import brief


def problems(exc: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[tuple[str, str]]:
    """pydantic's errors as (field, message); a macro argument of no allowed type is one problem, not four."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        err = {**err, "loc": (*prefix, *err.get("loc", ()))}
        loc = err["loc"]
        if len(loc) >= 2 and loc[0] == "macro_args":
            problem = ("macro_args", f"argument {brief(loc[1])} must be text, a number or true/false "
                                     f"(got {brief(err.get('input'))})")
        else:
            problem = (_field(err), _message(err, model))
        if problem not in out:
            out.append(problem)
    return out


def _field(err: dict) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    if not loc and "scheduler" in err.get("msg", ""):
        return "scheduler"
    return ".".join(loc) if loc else "config"


_BOUNDS = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
           "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}


def _nested(model: type[BaseModel], name: object) -> type[BaseModel] | None:
    """The model of a field that is a model itself (``cluster``), else None."""
    field = model.model_fields.get(str(name))
    kind = field.annotation if field else None
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _message(err: dict, model: type[BaseModel]) -> str:
    kind = err.get("type", "")
    loc = err.get("loc") or ("",)
    nested = _nested(model, loc[0]) if len(loc) == 2 else None   # a key of the cluster parameter
    if kind == "extra_forbidden" and nested:
        return f"unknown setting; known: {', '.join(nested.model_fields)}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        field = (nested or model).model_fields.get(str(loc[-1]))
        what = f": {field.description}" if field and field.description else ""
        return f"must be {words} {err['ctx'][key]:g} (got {brief(err.get('input'))}){what}"
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    if err.get("type", "").endswith(("_type", "_parsing")):
        msg += f" (got {brief(err.get('input'))})"
    return msg
