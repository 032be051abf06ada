"""Request bodies compared field by field with the documented shape (docs/gemini-api.md §1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.errors import InputError, TemplateError
from batchgen.gemini.request import Encoded, Prefix, RequestBuilder, request_hash, streamed_part
from batchgen.input.prompts import PromptTemplate
from batchgen.job.spec import load_job
from batchgen.plan import plan_job
from tests.helpers.paths import ROOT, write_job

SEED_JOB = """
    [input]
    path = "rows.csv"

    [model]
    name = "gemini-2.5-flash"

    [prompt]
    user = "List a few popular {{ thing }} recipes, and include the amounts of ingredients."

    [response_schema]
    type = "ARRAY"

    [response_schema.items]
    type = "OBJECT"
    propertyOrdering = ["recipeName", "ingredients"]

    [response_schema.items.properties.recipeName]
    type = "STRING"

    [response_schema.items.properties.ingredients]
    type = "ARRAY"
    items = { type = "STRING" }
"""


def test_body_matches_the_real_seed_request(tmp_path: Path, seed: dict[str, Any]) -> None:
    (tmp_path / "rows.csv").write_text("thing\ncookie\n")
    plan = plan_job(load_job(write_job(tmp_path, SEED_JOB)))
    body = json.loads(plan.first_request())
    expected = seed["request"]
    assert set(body) == {"contents", "generationConfig"}
    assert len(body["contents"]) == 1
    assert body["contents"][0]["role"] == "user"  # optional on the wire, explicit here
    assert body["contents"][0]["parts"] == expected["contents"][0]["parts"]
    assert body["generationConfig"] == expected["generationConfig"]


def test_system_instruction_and_passthrough_generation_config() -> None:
    job = load_job(ROOT / "jobs" / "cookie_recipes.toml")
    body = json.loads(RequestBuilder(job).body("user text", "system text"))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "user text"}]}]
    assert body["systemInstruction"] == {"parts": [{"text": "system text"}]}
    config = body["generationConfig"]
    assert config["temperature"] == 0.7
    assert config["maxOutputTokens"] == 8192
    assert config["thinkingConfig"] == {"thinkingLevel": "low"}
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == job.response_schema
    assert "systemInstruction" not in json.loads(RequestBuilder(job).body("u"))


def test_a_streamed_media_body_is_sent_with_the_cache_like_a_whole_one() -> None:
    """A row whose file part is read as it is sent loses the cached prefix the same way a whole
    body does: the cached request asks the same, whichever way its media travel."""
    job = load_job(ROOT / "jobs" / "cookie_recipes.toml")
    builder = RequestBuilder(job)
    data = b"\x89PNG" + bytes(range(256)) * 40
    encoded = Encoded(len(data), lambda: iter([data[: 3 * 1000], data[3 * 1000 :]]))
    part = streamed_part("image/png", encoded)
    streamed = builder.request("user text", "system text", media=[part])
    prefix = Prefix(job.model.name, "system text", b"")
    cached = builder.cached(streamed, prefix, "cachedContents/c1")
    assert cached is not None and not isinstance(cached, bytes)
    sent = json.loads(b"".join(cached.chunks()))
    assert sent["cachedContent"] == "cachedContents/c1" and "systemInstruction" not in sent
    assert len(b"".join(cached.chunks())) == cached.size  # Content-Length stays exact
    whole = json.loads(b"".join(streamed.chunks()))
    assert sent["contents"] == whole["contents"]
    assert builder.cached(streamed, Prefix(job.model.name, "other", b""), "c") is None


def test_body_is_valid_json_for_any_text() -> None:
    job = load_job(ROOT / "jobs" / "cookie_recipes.toml")
    text = 'quotes " backslash \\ newline \n unicode é 🍪 \u2028'
    assert json.loads(RequestBuilder(job).body(text))["contents"][0]["parts"][0]["text"] == text


def test_request_hash_is_stable_and_sensitive() -> None:
    assert request_hash(b"a") == request_hash(b"a") != request_hash(b"b")
    assert len(request_hash(b"a")) == 16


def test_template_renders_with_filters_and_strips() -> None:
    from batchgen.job.spec import PromptSpec

    template = PromptTemplate(
        PromptSpec(
            user="\n {{ a | upper }}{% if b %} and {{ b }}{% endif %}\n", system="About {{ c }}"
        ),
        "job.toml",
    )
    assert template.variables == ("a", "b", "c")
    assert template.render({"a": "x", "b": "y", "c": "z"}, "r1") == ("X and y", "About z")


def test_null_template_value_names_row_and_column() -> None:
    from batchgen.job.spec import PromptSpec

    template = PromptTemplate(PromptSpec(user="{{ a }}"), "job.toml")
    with pytest.raises(TemplateError, match="row r7: column 'a' is empty"):
        template.render({"a": None}, "r7")


def test_template_syntax_error_names_file_and_line() -> None:
    from batchgen.job.spec import PromptSpec

    with pytest.raises(TemplateError, match=r"job.toml: prompt.user: line 2: .*"):
        PromptTemplate(PromptSpec(user="ok\n{{ a "), "job.toml")


def test_template_column_missing_from_input_is_caught_before_any_call(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("other\ncookie\n")
    with pytest.raises(InputError, match=r"rows.csv: no column 'thing' \(used in the prompt\)"):
        plan_job(load_job(write_job(tmp_path, SEED_JOB)))
