"""The emulator's reading of request bodies, as the v1beta API's proto3 JSON parser does it.

The real API checks the body before it looks at the key or the model, and it answers a bad body
with ``400 INVALID_ARGUMENT`` in a fixed wording that clients match on. This module reproduces
that: camelCase and snake_case field names, enum names in any case or as numbers, unknown fields
rejected with their path (``generation_config.response_schema.properties[0].value``), a list in
a scalar field rejected, and the request-level checks (``contents`` present, a schema only with a
JSON MIME type). :func:`read_generate_request` returns the body in canonical camelCase form.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ApiError",
    "error_body",
    "parse_json",
    "prompt_text",
    "read_count_request",
    "read_generate_request",
]

_PROTO = "type.googleapis.com/google.ai.generativelanguage.v1beta."
SCHEMA_TYPES = (
    "TYPE_UNSPECIFIED",
    "STRING",
    "NUMBER",
    "INTEGER",
    "BOOLEAN",
    "ARRAY",
    "OBJECT",
    "NULL",
)
JSON_MIME_TYPES = ("application/json", "text/x.enum")
MAX_CANDIDATES = 8  # candidateCount's range (docs/gemini-api.md §1)
# GenerateContentRequest.serviceTier (docs/gemini-api.md §11): Google's SDKs send the lowercase
# names, java-genai the SERVICE_TIER_* ones; both are read here, in any case. The enum's numbers
# are not published, so a number is refused like any unknown value.
SERVICE_TIERS = ("unspecified", "standard", "flex", "priority")

# Field name -> kind. A kind is a scalar ("string", "int32", "int64", "float", "bool", "enum"),
# "any" (a Struct or a message the emulator does not inspect), "Type" (Schema.type), a message
# name from _MESSAGES, or one of those behind "repeated " or "map " (map<string, message>).
_MESSAGES: dict[str, dict[str, str]] = {
    "GenerateContentRequest": {
        "model": "string", "contents": "repeated Content", "systemInstruction": "Content",
        "tools": "repeated any", "toolConfig": "any", "safetySettings": "repeated SafetySetting",
        "generationConfig": "GenerationConfig", "cachedContent": "string",
        "serviceTier": "ServiceTier",
    },
    "CountTokensRequest": {
        "contents": "repeated Content", "generateContentRequest": "GenerateContentRequest",
    },
    "Content": {"role": "string", "parts": "repeated Part"},
    "Part": {
        "text": "string", "inlineData": "any", "fileData": "any", "functionCall": "any",
        "functionResponse": "any", "executableCode": "any", "codeExecutionResult": "any",
        "thought": "bool", "thoughtSignature": "string", "videoMetadata": "any",
        "partMetadata": "any", "mediaResolution": "any",
    },
    "SafetySetting": {"category": "HarmCategory", "threshold": "HarmBlockThreshold"},
    "GenerationConfig": {
        "candidateCount": "int32", "stopSequences": "repeated string",
        "maxOutputTokens": "int32", "temperature": "float", "topP": "float", "topK": "int32",
        "seed": "int32", "responseMimeType": "string", "responseSchema": "Schema",
        "responseJsonSchema": "any", "presencePenalty": "float", "frequencyPenalty": "float",
        "responseLogprobs": "bool", "logprobs": "int32", "enableEnhancedCivicAnswers": "bool",
        "responseModalities": "repeated enum", "speechConfig": "any", "imageConfig": "any",
        "mediaResolution": "enum", "thinkingConfig": "ThinkingConfig",
    },
    "ThinkingConfig": {"includeThoughts": "bool", "thinkingBudget": "int32",
                       "thinkingLevel": "ThinkingLevel"},
    "Schema": {
        "type": "Type", "format": "string", "title": "string", "description": "string",
        "nullable": "bool", "enum": "repeated string", "items": "Schema", "maxItems": "int64",
        "minItems": "int64", "properties": "map Schema", "required": "repeated string",
        "minProperties": "int64", "maxProperties": "int64", "minimum": "float",
        "maximum": "float", "minLength": "int64", "maxLength": "int64", "pattern": "string",
        "example": "any", "anyOf": "repeated Schema", "propertyOrdering": "repeated string",
        "default": "any",
    },
}  # fmt: skip
# Proto quirk (docs/gemini-api.md §1): `responseJsonSchema` is the field
# response_json_schema_ordered, while snake_case `response_json_schema` is the JSON name
# `_responseJsonSchema`. Both carry the same thing for the emulator.
_ALIASES = {
    "_responseJsonSchema": "responseJsonSchema",
    "response_json_schema": "responseJsonSchema",
    "response_json_schema_ordered": "responseJsonSchema",
}
_SCALAR_TYPES = {
    "string": "TYPE_STRING",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float": "TYPE_FLOAT",
    "bool": "TYPE_BOOL",
    "enum": "TYPE_ENUM",
}
# Enums the emulator checks by name (any case) or number, as the API does: a name it does not
# know is a 400 (docs/gemini-api.md §1, §12). Listed in the proto's order, so the index is the
# number. ThinkingLevel's numbers are not published: only its names are taken.
ENUMS: dict[str, tuple[str, ...]] = {
    "HarmCategory": (
        "HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_DEROGATORY", "HARM_CATEGORY_TOXICITY",
        "HARM_CATEGORY_VIOLENCE", "HARM_CATEGORY_SEXUAL", "HARM_CATEGORY_MEDICAL",
        "HARM_CATEGORY_DANGEROUS", "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
    ),
    "HarmBlockThreshold": (
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF",
    ),
    "ThinkingLevel": ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"),
}  # fmt: skip
_NUMBERED_ENUMS = ("HarmCategory", "HarmBlockThreshold")
_UPPER = re.compile(r"[A-Z]")
# A batch sends one generationConfig (with its responseSchema) in every call, so reading it and
# checking its schema are memoized: the emulator then keeps up with a client at thousands of
# calls per second. Distinct configs (tests) just miss; both caches are small and bounded.
_CONFIG_CACHE_SIZE = 64


class ApiError(Exception):
    """An error answer in the API's envelope; raised anywhere in a handler."""

    def __init__(
        self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.status, self.message, self.details)


def error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"error": {code, message, status, details?}}``, the shape of every v1beta error."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _snake(name: str) -> str:
    return _UPPER.sub(lambda m: "_" + m.group(0).lower(), name)


def _lookup(message: str) -> dict[str, tuple[str, str]]:
    """Every accepted spelling of a message's fields -> (camelCase name, kind)."""
    table: dict[str, tuple[str, str]] = {}
    for name, kind in _MESSAGES[message].items():
        table[name] = table[_snake(name)] = (name, kind)
    if message == "GenerationConfig":
        for alias, name in _ALIASES.items():
            table[alias] = (name, "any")
    return table


_LOOKUPS = {message: _lookup(message) for message in _MESSAGES}


def parse_json(raw: bytes) -> Any:
    """Decode a request body; bad JSON is the API's ``Unexpected token`` 400."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        rest = exc.doc[exc.pos :].strip()
        near = rest.splitlines()[0][:40] if rest else ""
    except UnicodeDecodeError:
        near = "?"
    if near:
        message = f"Invalid JSON payload received. Unexpected token.\n{near}\n^"
    else:
        message = "Invalid JSON payload received. Unexpected end of string. Expected a value."
    raise ApiError(400, "INVALID_ARGUMENT", message)


class _Reader:
    """One pass over a body: canonical copy out, every violation collected on the way."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []  # (field path, description)

    def unknown(self, name: str, path: str, why: str) -> None:
        where = f" at '{path}'" if path else ""
        self.violations.append(
            (path, f'Invalid JSON payload received. Unknown name "{name}"{where}: {why}')
        )

    def invalid(self, path: str, kind: str, value: Any) -> None:
        self.violations.append((path, f"Invalid value at '{path}' ({kind}), {json.dumps(value)}"))

    def message(self, raw: Any, message: str, path: str) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            self.invalid(path, _PROTO + message, raw)
            return {}
        out: dict[str, Any] = {}
        fields = _LOOKUPS[message]
        for key, value in raw.items():
            if key not in fields:
                self.unknown(str(key), path, "Cannot find field.")
                continue
            name, kind = fields[key]
            here = f"{path}.{_snake(name)}" if path else _snake(name)
            if value is not None:  # proto3 JSON reads null as "not set"
                out[name] = self.field(value, kind, here, str(key), path)
        return out

    def field(self, value: Any, kind: str, here: str, key: str, parent: str) -> Any:
        if kind.startswith("repeated "):
            inner = kind.removeprefix("repeated ")
            items = value if isinstance(value, list) else [value]
            return [self.single(v, inner, f"{here}[{i}]", key, parent) for i, v in enumerate(items)]
        if kind.startswith("map "):
            if not isinstance(value, Mapping):
                self.invalid(here, "map", value)
                return {}
            inner = kind.removeprefix("map ")
            return {
                str(k): self.single(v, inner, f"{here}[{i}].value", key, parent)
                for i, (k, v) in enumerate(value.items())
            }
        if isinstance(value, list) and kind != "any":
            self.unknown(key, parent, "Proto field is not repeating, cannot start list.")
            return None
        return self.single(value, kind, here, key, parent)

    def single(self, value: Any, kind: str, here: str, key: str, parent: str) -> Any:
        if kind == "any":
            return value
        if kind == "GenerationConfig" and isinstance(value, Mapping):
            try:
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            except (TypeError, ValueError):  # not from json.loads: read it as it is
                return self.message(value, kind, here)
            config, violations = _read_config(text, here)
            self.violations.extend(violations)
            return config
        if kind in _MESSAGES:
            return self.message(value, kind, here)
        if isinstance(value, Mapping):
            self.unknown(key, parent, "Starting an object on a scalar field")
            return None
        if kind == "Type":
            return self.schema_type(value, here)
        if kind == "ServiceTier":
            return self.service_tier(value, here)
        if kind in ENUMS:
            return self.named_enum(value, kind, here)
        return self.scalar(value, kind, here)

    def named_enum(self, value: Any, kind: str, here: str) -> str | None:
        """One of :data:`ENUMS`: canonical name out; an unknown name or number is a 400."""
        names = ENUMS[kind]
        if isinstance(value, str) and value.upper() in names:
            return value.upper()
        if kind in _NUMBERED_ENUMS and type(value) is int and 0 <= value < len(names):
            return names[value]
        self.invalid(here, _PROTO + kind, value)
        return None

    def service_tier(self, value: Any, here: str) -> str | None:
        """serviceTier, canonical lowercase (``SERVICE_TIER_FLEX`` → ``flex``)."""
        if isinstance(value, str):
            name = value.lower().removeprefix("service_tier_")
            if name in SERVICE_TIERS:
                return name
        self.invalid(here, _PROTO + "ServiceTier", value)
        return None

    def schema_type(self, value: Any, here: str) -> str | None:
        """Schema.type: an enum, so names in any case or their numbers."""
        if isinstance(value, str) and value.upper() in SCHEMA_TYPES:
            return value.upper()
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 8:
            return SCHEMA_TYPES[value]
        self.invalid(here, _PROTO + "Type", value)
        return None

    def scalar(self, value: Any, kind: str, here: str) -> Any:
        ok = {
            "string": isinstance(value, str),
            "bool": isinstance(value, bool),
            "enum": isinstance(value, str | int) and not isinstance(value, bool),
        }.get(kind)
        if ok is None:  # numbers: proto3 JSON also takes them as strings ("64")
            try:
                number = float(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                number = None
            integral = number is not None and (kind == "float" or number.is_integer())
            if integral and number is not None:
                return number if kind == "float" else int(number)
            ok = False
        if not ok:
            self.invalid(here, _SCALAR_TYPES[kind], value)
        return value


@functools.lru_cache(maxsize=_CONFIG_CACHE_SIZE)
def _read_config(text: str, path: str) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
    """A GenerationConfig (as compact JSON) read at ``path``: (canonical copy, violations).

    The copy is shared by every call that sends the same config; nothing downstream mutates it.
    """
    reader = _Reader()
    config = reader.message(json.loads(text), "GenerationConfig", path)
    return config, tuple(reader.violations)


def _raise_violations(violations: list[tuple[str, str]]) -> None:
    if not violations:
        return
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {"field": path, "description": text} if path else {"description": text}
                for path, text in violations
            ],
        }
    ]
    message = "\n".join(text for _, text in violations)
    raise ApiError(400, "INVALID_ARGUMENT", message, details)


def _bad_request(problems: list[str]) -> None:
    """Request-level problems use a different wording: ``* Message.path: what\\n`` lines."""
    if problems:
        raise ApiError(400, "INVALID_ARGUMENT", "".join(f"* {p}\n" for p in problems))


def _read(raw: Any, message: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received. Root element must be a message.",
        )
    reader = _Reader()
    body = reader.message(raw, message, "")
    _raise_violations(reader.violations)
    return body


def read_generate_request(raw: Any) -> dict[str, Any]:
    """Check a generateContent body; return it with canonical camelCase names.

    Raises:
        ApiError: 400 INVALID_ARGUMENT, worded as the real API words it.
    """
    body = _read(raw, "GenerateContentRequest")
    _bad_request(_request_problems(body, "GenerateContentRequest"))
    return body


def read_count_request(raw: Any) -> dict[str, Any]:
    """Check a countTokens body; return the GenerateContentRequest-shaped part it counts."""
    body = _read(raw, "CountTokensRequest")
    inner = body.get("generateContentRequest")
    if inner is None:
        inner, where = {"contents": body.get("contents", [])}, "CountTokensRequest"
    elif "contents" in body:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            "* CountTokensRequest: set either contents or generate_content_request, not both\n",
        )
    else:
        where = "CountTokensRequest.generate_content_request"
    _bad_request(_request_problems(inner, where))
    return inner


def _request_problems(body: Mapping[str, Any], where: str) -> list[str]:
    if not body.get("contents"):
        return [f"{where}.contents: contents is not specified"]
    config = body.get("generationConfig") or {}
    thinking = config.get("thinkingConfig") or {}
    if "thinkingLevel" in thinking and "thinkingBudget" in thinking:
        return [
            f"{where}.generation_config.thinking_config: thinking_level and thinking_budget "
            "cannot both be set"
        ]
    count = config.get("candidateCount")
    if count is not None and not 1 <= count <= MAX_CANDIDATES:
        return [f"{where}.generation_config.candidate_count: must be between 1 and 8"]
    schema = config.get("responseSchema")
    json_schema = config.get("responseJsonSchema")
    mime = str(config.get("responseMimeType", "text/plain")).lower()
    at = f"{where}.generation_config"
    if schema is not None and json_schema is not None:
        return [
            f"{at}.response_schema: response_schema and response_json_schema cannot both be set"
        ]
    if (schema is not None or json_schema is not None) and mime not in JSON_MIME_TYPES:
        return [
            f"{at}.response_mime_type: a response schema needs response_mime_type "
            f"application/json or text/x.enum, not {mime!r}"
        ]
    enum_source = schema if schema is not None else json_schema
    if mime == "text/x.enum" and not (isinstance(enum_source, Mapping) and enum_source.get("enum")):
        return [f"{at}.response_schema: text/x.enum needs a STRING schema with enum values"]
    return _schema_problems_once(schema, f"{at}.response_schema") if schema is not None else []


# path -> (the schema object last checked there, its problems). Only two paths exist (a generate
# request, and one inside countTokens); the entry holds the schema, so its identity stays unique.
_SCHEMA_CHECKS: dict[str, tuple[object, list[str]]] = {}


def _schema_problems_once(schema: Mapping[str, Any], path: str) -> list[str]:
    """_schema_problems, remembered for the last schema object: a cached config's schema."""
    last = _SCHEMA_CHECKS.get(path)
    if last is not None and last[0] is schema:
        return list(last[1])
    problems = _schema_problems(schema, path)
    _SCHEMA_CHECKS[path] = (schema, problems)
    return list(problems)


def _schema_problems(node: Mapping[str, Any], path: str) -> list[str]:
    """What the proto cannot say: a type on every node without anyOf, items on an ARRAY."""
    problems = []
    if node.get("type", "TYPE_UNSPECIFIED") == "TYPE_UNSPECIFIED" and not node.get("anyOf"):
        problems.append(f"{path}.type: must be specified")
    if node.get("type") == "ARRAY" and not node.get("items"):
        problems.append(f"{path}.items: missing field.")
    if isinstance(node.get("items"), Mapping):
        problems += _schema_problems(node["items"], f"{path}.items")
    for name, child in (node.get("properties") or {}).items():
        problems += _schema_problems(child, f"{path}.properties[{name}]")
    for i, child in enumerate(node.get("anyOf") or []):
        problems += _schema_problems(child, f"{path}.any_of[{i}]")
    return problems


def prompt_text(body: Mapping[str, Any]) -> str:
    """The text the emulator reads and counts: system instruction parts, then contents parts."""
    contents = [body["systemInstruction"]] if body.get("systemInstruction") else []
    contents += list(body.get("contents") or [])
    texts = [
        part["text"]
        for content in contents
        for part in content.get("parts") or []
        if isinstance(part.get("text"), str)
    ]
    return "\n".join(texts)
