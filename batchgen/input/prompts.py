"""Render a row into prompt text with Jinja2 templates that fail loudly.

A placeholder names a column: ``{{ topic }}``. A column whose name is not a Jinja name (``Product
Name``) is ``{{ row["Product Name"] }}``: :data:`ROW` is the whole row, unless the input has a
column of that name, which then keeps it (a job written before ``row`` existed keeps its meaning;
``input.rename`` frees the name). Jinja2 brings filters and conditionals
(``{{ title | upper }}``, ``{% if notes %}…{% endif %}``) and, with StrictUndefined, an error for
a name the row lacks instead of an empty string in a prompt that is paid for. A prompt that
renders to no text at all (a quoted empty cell) is a template failure too: it is never sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from batchgen.errors import TemplateError
from batchgen.job.spec import PromptSpec

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
ROW = "row"  # the template's name for the whole row


class PromptTemplate:
    """The user (and optional system) template of a job, and its few-shot examples (a user
    template and a model answer each: a template, or a table written as its JSON), compiled
    once."""

    def __init__(self, spec: PromptSpec, where: str) -> None:
        self._where = where
        self._user = _compile(spec.user, f"{where}: prompt.user")
        self._system = _compile(spec.system, f"{where}: prompt.system") if spec.system else None
        self._examples: list[tuple[jinja2.Template, jinja2.Template | str]] = []
        example_sources: list[str] = []
        for i, example in enumerate(spec.examples):
            at = f"{where}: prompt.examples[{i}]"
            user = _compile(example.user, f"{at}.user")
            example_sources.append(example.user)
            if isinstance(example.model, str):
                model: jinja2.Template | str = _compile(example.model, f"{at}.model")
                example_sources.append(example.model)
            else:
                model = json.dumps(example.model, ensure_ascii=False)
            self._examples.append((user, model))
        # examples that use no column are rendered once for the whole job
        self.shared_examples = not set().union(*(_variables(s) for s in example_sources))
        sources = [spec.user] + ([spec.system] if spec.system else []) + example_sources
        names = set().union(*(_variables(s) for s in sources))
        self._names: tuple[str, ...] = tuple(sorted(names))
        self.variables = self._names  # the columns the template reads (after bind)
        subscripts, whole = set(), False
        for source in sources:
            for column in _row_uses(_ENV.parse(source)):
                if column is None:
                    whole = True
                else:
                    subscripts.add(column)
        self._subscripts = tuple(sorted(subscripts))
        self._whole = whole
        self.whole_row = False  # set by bind: the template reads the row beyond row["name"]
        self._row = False  # set by bind: ROW is the whole row, not a column
        # a system instruction that uses no column is the same for every row (a cacheable prefix)
        self.shared_system = spec.system is None or not _variables(spec.system)

    def bind(self, available: Sequence[str]) -> dict[str, str]:
        """The columns the template reads (name → why) from an input with ``available``."""
        self._row = ROW in self._names and ROW not in available
        if ROW in available and self._subscripts:
            raise TemplateError(
                f"{self._where}: prompt: {ROW}[{self._subscripts[0]!r}] cannot name a column: the "
                f"input has a column named {ROW!r}, which {{{{ {ROW} }}}} is; rename it "
                f'(input.rename = {{ {ROW} = "{ROW}_value" }})'
            )
        if not self._row:
            self.variables, self.whole_row = self._names, False
            return dict.fromkeys(self.variables, "used in the prompt")
        self.variables = tuple(v for v in self._names if v != ROW) + self._subscripts
        self.whole_row = self._whole
        needs = dict.fromkeys(self.variables, "used in the prompt")
        needs.update(dict.fromkeys(self._subscripts, f"used in the prompt as {ROW}[...]"))
        return needs

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
        context = {**values, ROW: values} if self._row else values
        try:
            user = self._user.render(context).strip()
            system = self._system.render(context).strip() if self._system else None
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
        context = {**values, ROW: values} if self._row else values
        try:
            return [
                (u.render(context).strip(), m if isinstance(m, str) else m.render(context).strip())
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


def _row_uses(node: jinja2.nodes.Node) -> Iterator[str | None]:
    """Each use of :data:`ROW`: the column of ``row["name"]``/``row.name``, None for any other."""
    if isinstance(node, jinja2.nodes.Getitem | jinja2.nodes.Getattr):
        inner = node.node
        if isinstance(inner, jinja2.nodes.Name) and inner.name == ROW:
            if isinstance(node, jinja2.nodes.Getattr):
                yield None if hasattr(dict, node.attr) else node.attr  # row.items() is the row
                return
            if isinstance(node.arg, jinja2.nodes.Const) and isinstance(node.arg.value, str):
                yield node.arg.value
                return
    if isinstance(node, jinja2.nodes.Name) and node.name == ROW and node.ctx == "load":
        yield None
        return
    for child in node.iter_child_nodes():
        yield from _row_uses(child)
