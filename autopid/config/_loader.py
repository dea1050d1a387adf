"""Safe YAML loading and validation into pydantic models, with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from autopid.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every autopid config: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def _expected_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """Walk the model along ``loc`` (minus the last key) to list the allowed keys there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            # dict values, unions, lists: give up on naming alternatives
            ann = None
        else:
            ann = fields[part].annotation
        current = _model_in(ann)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_validation_error(source: str, model: type[BaseModel], exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            allowed = _expected_keys(model, loc)
            hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {where}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"  {where}: required key is missing")
        else:
            got = err.get("input")
            got_s = repr(got)
            if len(got_s) > 60:
                got_s = got_s[:57] + "..."
            lines.append(f"  {where}: {err['msg']} (got {got_s})")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with the safe loader; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file") from exc


def validate_config(data: Any, model: type[T], *, source: str = "<config>") -> T:
    """Validate a mapping into ``model``; a failure lists every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, model, exc)) from exc


def load_yaml_config(path: str | Path, model: type[T]) -> T:
    """Load ``path`` safely and validate it into ``model``."""
    return validate_config(read_yaml(path), model, source=str(path))


def dump_yaml(model: BaseModel) -> str:
    """The resolved configuration, as YAML that loads back into the same model."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
