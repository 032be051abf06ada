"""Render a row into prompt text with Jinja2 templates that fail loudly.

A placeholder names a column: ``{{ topic }}``. Jinja2 brings filters and conditionals
(``{{ title | upper }}``, ``{% if notes %}…{% endif %}``) and, with StrictUndefined, an error for
a name the row lacks instead of an empty string in a prompt that is paid for. A prompt that
renders to no text at all (a quoted empty cell) is a template failure too: it is never sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta

from batchgen.errors import TemplateError
from batchgen.job.spec import PromptSpec

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


class PromptTemplate:
    """The user (and optional system) template of a job, and its few-shot examples (a user
    template and a model answer each: a template, or a table written as its JSON), compiled
    once."""

    def __init__(self, spec: PromptSpec, where: str) -> None:
        self._user = _compile(spec.user, f"{where}: prompt.user")
        self._system = _compile(spec.system, f"{where}: prompt.system") if spec.system else None
        names = _variables(spec.user) | (_variables(spec.system) if spec.system else set())
        self._examples: list[tuple[jinja2.Template, jinja2.Template | str]] = []
        example_names: set[str] = set()
        for i, example in enumerate(spec.examples):
            at = f"{where}: prompt.examples[{i}]"
            user = _compile(example.user, f"{at}.user")
            example_names |= _variables(example.user)
            if isinstance(example.model, str):
                model: jinja2.Template | str = _compile(example.model, f"{at}.model")
                example_names |= _variables(example.model)
            else:
                model = json.dumps(example.model, ensure_ascii=False)
            self._examples.append((user, model))
        self.variables: tuple[str, ...] = tuple(sorted(names | example_names))
        # examples that use no column are rendered once for the whole job
        self.shared_examples = not example_names
        # a system instruction that uses no column is the same for every row (a cacheable prefix)
        self.shared_system = spec.system is None or not _variables(spec.system)

    def system_text(self) -> str | None:
        """The system instruction every row shares (``shared_system``), rendered; None: none."""
        if self._system is None or not self.shared_system:
            return None
        try:
            return self._system.render({}).strip()
        except jinja2.TemplateError as exc:
            raise TemplateError(f"prompt.system: the template failed: {exc}") from None

    def render(self, values: Mapping[str, Any], row: str) -> tuple[str, str | None]:
        """Render (user text, system text) for one row, stripped; ``row`` names it in errors."""
        for name in self.variables:
            if values.get(name) is None:
                raise TemplateError(f"row {row}: column {name!r} is empty; the prompt needs it")
        try:
            user = self._user.render(values).strip()
            system = self._system.render(values).strip() if self._system else None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"row {row}: {exc.message}") from None
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise TemplateError(f"row {row}: the prompt template failed: {exc}") from None
        if not user:
            raise TemplateError(f"row {row}: the prompt is empty{_blank(values, self.variables)}")
        return user, system

    def render_examples(self, values: Mapping[str, Any], row: str) -> list[tuple[str, str]]:
        """The few-shot examples for one row (or, with no column in them, for every row):
        (user text, model text) each, stripped."""
        try:
            return [
                (u.render(values).strip(), m if isinstance(m, str) else m.render(values).strip())
                for u, m in self._examples
            ]
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"row {row}: prompt.examples: {exc.message}") from None
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise TemplateError(f"row {row}: a prompt.examples template failed: {exc}") from None


def _blank(values: Mapping[str, Any], names: tuple[str, ...]) -> str:
    """Which of the prompt's columns are blank text, said after "the prompt is empty"."""
    blank = [n for n in names if isinstance(values.get(n), str) and not values[n].strip()]
    if not blank:
        return "; nothing was sent"
    said = ", ".join(map(repr, blank))
    return f" (blank {said}); nothing was sent: fill the cell or drop the row"


def _compile(source: str, where: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: line {exc.lineno}: {exc.message}") from None


def _variables(source: str) -> set[str]:
    return set(jinja2.meta.find_undeclared_variables(_ENV.parse(source)))
