"""The manifest reference for runbook authors, generated from the schema in :mod:`agent.catalog.manifest`.

:func:`manifest_reference` renders Markdown from the pydantic models themselves: each field's TOML key, type,
whether it is required or its default, the values it accepts (patterns, bounds, choices) and its description.
docs/runbooks.md holds that output between ``<!-- manifest-reference:begin -->`` and
``<!-- manifest-reference:end -->``; ``tests/test_manifest_reference.py`` fails when the two differ.

Every description comes from the schema (``Field(description=...)`` in :mod:`agent.catalog.manifest`), the one
source; :func:`undocumented_fields` names the fields that lack one, and the test requires there be none. No I/O here
except in :func:`main`::

    python -m agent.catalog.reference                  # print the reference
    python -m agent.catalog.reference --write          # rewrite its section of docs/runbooks.md
    python -m agent.catalog.reference --undocumented   # the fields whose schema has no description
"""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from agent.catalog.manifest import Manifest

BEGIN = "<!-- manifest-reference:begin -->"
END = "<!-- manifest-reference:end -->"
#: The command that rewrites the section, as the doc and the test name it.
REGENERATE = "python -m agent.catalog.reference --write"

_TOML_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
_HEADER = "| field | type | required / default | accepts | description |\n|---|---|---|---|---|"


def _code(text: object) -> str:
    """``text`` as inline code, with a longer fence when it holds backticks."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    """One table cell: on one line, pipes escaped (GitHub needs ``\\|`` inside code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(docstring: str | None) -> str:
    """A docstring's first paragraph in Markdown (reST's double backticks made single)."""
    return (docstring or "").strip().split("\n\n")[0].replace("``", "`").replace("\n", " ")


def _toml(value: object) -> str:
    """A default as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)


def _type(prop: dict[str, Any]) -> str:
    """The TOML type a property takes."""
    if "anyOf" in prop:
        return " or ".join(_type(part) for part in prop["anyOf"] if part.get("type") != "null")
    if prop.get("type") == "array":
        items = prop.get("items", {})
        if "$ref" in items or "oneOf" in items:
            return "array of tables"
        return f"array of {_type(items)}s"
    return _TOML_TYPES.get(str(prop.get("type")), str(prop.get("type", "any")))


def _bounds(prop: dict[str, Any]) -> list[str]:
    """Numeric bounds: ``> 0 and ≤ 86400``."""
    signs = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    found = [f"{sign} {prop[key]}" for key, sign in signs.items() if key in prop]
    return [" and ".join(found)] if found else []


def _lengths(prop: dict[str, Any]) -> list[str]:
    """String lengths: ``1–200 characters``."""
    low, high = prop.get("minLength"), prop.get("maxLength")
    if low is not None and high is not None:
        return [f"{low}–{high} characters"]
    if low is not None:
        return [f"at least {low} character" + ("s" if low != 1 else "")]
    if high is not None:
        return [f"at most {high} characters"]
    return []


def _items(prop: dict[str, Any]) -> list[str]:
    """Array constraints: how many items, and what each one accepts."""
    found = []
    if "minItems" in prop:
        found.append(f"at least {prop['minItems']} item" + ("s" if prop["minItems"] != 1 else ""))
    if "maxItems" in prop:
        found.append(f"at most {prop['maxItems']} items")
    each = _accepts(prop.get("items", {}))
    if each:
        found.append("each " + ", ".join(each))
    return found


def _accepts(prop: dict[str, Any]) -> list[str]:
    """What a property accepts beyond its type: fixed values, choices, patterns, bounds."""
    if "anyOf" in prop:
        return [text for part in prop["anyOf"] for text in _accepts(part)]
    found = []
    if "const" in prop:
        found.append("exactly " + _code(_toml(prop["const"])))
    if "enum" in prop:
        found.append("one of " + ", ".join(_code(_toml(value)) for value in prop["enum"]))
    if "pattern" in prop:
        found.append("matching " + _code(prop["pattern"]))
    found += _lengths(prop) + _bounds(prop)
    if prop.get("type") == "array":
        found += _items(prop)
    return found


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    return "not set" if value is None else _code(_toml(value))


def _key(name: str, field: FieldInfo) -> str:
    """The field's TOML key (its alias, when it has one)."""
    return field.alias or name


def _row(key: str, field: FieldInfo, prop: dict[str, Any]) -> str:
    cells = [_code(key), _type(prop), _default(field), "; ".join(_accepts(prop)), _prose(field.description)]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _table(model: type[BaseModel], keys: Sequence[str] | None = None) -> str:
    """The rows of ``model``'s fields (those named in ``keys``, when given), in declaration order."""
    props = model.model_json_schema()["properties"]
    rows = [
        _row(_key(name, field), field, props[_key(name, field)])
        for name, field in model.model_fields.items()
        if keys is None or _key(name, field) in keys
    ]
    return "\n".join([_HEADER, *rows])


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models inside a field's annotation (``list[Annotated[A | B, ...]]`` → A, B), in order."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _variants(field: str) -> list[type[BaseModel]]:
    return list(_models_in(Manifest.model_fields[field].annotation))


def _properties(model: type[BaseModel]) -> dict[str, Any]:
    props: dict[str, Any] = model.model_json_schema()["properties"]
    return props


def _common_keys(models: Sequence[type[BaseModel]]) -> list[str]:
    """Keys every model declares alike (same schema, same default), in the first model's order."""
    first = _properties(models[0])
    return [
        key
        for key, prop in first.items()
        if all(_properties(model).get(key) == prop for model in models[1:]) and _same_default(models, key)
    ]


def _same_default(models: Sequence[type[BaseModel]], key: str) -> bool:
    defaults = {_default(_field_by_key(model, key)) for model in models}
    return len(defaults) == 1


def _field_by_key(model: type[BaseModel], key: str) -> FieldInfo:
    return next(field for name, field in model.model_fields.items() if _key(name, field) == key)


def _variant_title(model: type[BaseModel], discriminator: str) -> str:
    const = _properties(model)[discriminator].get("const")
    return f'`{discriminator} = "{const}"`' if const is not None else model.__name__


def _params_section() -> list[str]:
    variants = _variants("params")
    common = _common_keys(variants)
    parts = [
        "### Parameters (`[[params]]`)",
        "Each `[[params]]` table is one parameter; its `type` says which of the tables below applies. "
        "Fields every type takes:",
        _table(variants[0], common),
    ]
    for model in variants:
        own = [key for key in _properties(model) if key not in common]
        intro = _prose(model.model_json_schema().get("description"))
        parts += [
            f"#### {_variant_title(model, 'type')}",
            *([intro] if intro else []),
            _table(model, own),
        ]
    return parts


def _redact_section() -> list[str]:
    (model,) = _variants("redact")
    return [
        "### Redaction rules (`[[redact]]`)",
        _prose(model.model_json_schema().get("description")),
        _table(model),
    ]


def manifest_reference() -> str:
    """The manifest reference in Markdown, as docs/runbooks.md holds it between :data:`BEGIN` and :data:`END`."""
    parts = [
        f"<!-- Generated from agent/catalog/manifest.py by `{REGENERATE}`: edit the schema, not this section. -->",
        "### Top-level fields",
        _prose(Manifest.model_json_schema().get("description")) + " A key not listed here is refused.",
        _table(Manifest),
        *_params_section(),
        *_redact_section(),
    ]
    return "\n\n".join(parts) + "\n"


def schema_models() -> list[tuple[str, type[BaseModel]]]:
    """``(scope, model)`` of every model of a manifest: the top level, each parameter type, redaction rules."""
    return [("manifest", Manifest)] + [
        (field, model) for field in ("params", "redact") for model in _variants(field)
    ]


def schema_fields() -> list[tuple[str, type[BaseModel], str]]:
    """``(scope, model, key)`` of every field of the manifest's schema, as ``model_json_schema()`` lists them."""
    return [(scope, model, key) for scope, model in schema_models() for key in _properties(model)]


def undocumented_fields() -> list[str]:
    """``Model.key`` of every field whose schema has no description: give each ``Field(description=...)``."""
    return [
        f"{model.__name__}.{key}"
        for _, model, key in schema_fields()
        if not _properties(model)[key].get("description")
    ]


def section_of(doc: str) -> str | None:
    """The text between the markers in ``doc``, or None when they are missing."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        return None
    return doc[start + len(BEGIN) : end].strip("\n") + "\n"


def replace_section(doc: str, reference: str) -> str:
    """``doc`` with the text between the markers replaced by ``reference``; ValueError without the markers."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN} … {END} are missing")
    return doc[: start + len(BEGIN)] + "\n" + reference.strip("\n") + "\n" + doc[end:]


def main(argv: Sequence[str]) -> int:
    """``--write [PATH]``: rewrite the section of PATH (docs/runbooks.md); ``--undocumented``; else print."""
    if argv[:1] == ["--undocumented"]:
        print("\n".join(undocumented_fields()))
        return 0
    if argv[:1] != ["--write"]:
        sys.stdout.write(manifest_reference())
        return 0
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
    doc = path.read_text(encoding="utf-8")
    updated = replace_section(doc, manifest_reference())
    if updated != doc:
        path.write_text(updated, encoding="utf-8", newline="\n")
    print(f"{path}: manifest reference {'updated' if updated != doc else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
