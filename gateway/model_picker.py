"""Plain lists on admin forms, in place of raw JSON textareas.

`allowed_models` and `tags` are JSON lists in the database, but staff type
`fake-gpt, fake/*`, which a JSONField form field refuses ("Enter a valid
JSON"). `NameListField` reads commas and lines (model names also split on
spaces, which no name contains) and cleans to the same list. The model
picker offers the catalog's names (routes, wildcard routes, aliases and
smart routers) and keeps free entry, for patterns such as `openai/*`;
without JavaScript it is the textarea it enhances.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from django import forms
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from proxy.models import ModelAlias, Route, Router

_MODEL_SEPARATORS = re.compile(r"[,\s]+")
_TAG_SEPARATORS = re.compile(r"[,\n]+")


@dataclass(frozen=True, slots=True)
class CatalogName:
    name: str
    kind: str  # route, wildcard, alias, router


def catalog_names() -> list[CatalogName]:
    """Every name a client may ask for, active or not (a key may be set up
    before its route is switched on): three small tables, three queries."""
    names = [
        CatalogName(model, "wildcard" if model.endswith("*") else "route")
        for model in Route.objects.order_by("model").values_list("model", flat=True)
    ]
    names += [CatalogName(p, "alias") for p in ModelAlias.objects.order_by("pattern").values_list("pattern", flat=True)]
    names += [CatalogName(n, "router") for n in Router.objects.order_by("name").values_list("name", flat=True)]
    return names


def split_names(text: str, separators: re.Pattern[str]) -> list[str]:
    """The non-empty entries, stripped, each once, in the order typed."""
    seen: dict[str, None] = {}
    for part in separators.split(text):
        if part.strip():
            seen.setdefault(part.strip(), None)
    return list(seen)


def _json_list(text: str) -> Any:
    """A pasted JSON list (as the management API takes it) is read as one; other text is left as typed."""
    if text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
            return parsed
    return text


class NameListField(forms.Field):
    """A list of names typed as text; cleans to a list (empty: `empty_value`)."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def __init__(self, *, separators: re.Pattern[str], empty_value: Any, joiner: str, **kwargs: Any) -> None:
        self.separators, self.empty_value, self.joiner = separators, empty_value, joiner
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return self.joiner.join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> Any:
        value = _json_list(value) if isinstance(value, str) else value
        if isinstance(value, list | tuple):
            names = [str(v).strip() for v in value if str(v).strip()]
        else:
            names = split_names(value or "", self.separators)
        return names or self.empty_value

    def has_changed(self, initial: Any, data: Any) -> bool:
        # None, [] and "" all mean an empty list: not a change.
        return list(self.to_python(initial) or []) != list(self.to_python(data) or [])


def model_list_field(**kwargs: Any) -> NameListField:
    """Allowed models: empty means every model, stored as null (as api_key_issue does)."""
    return NameListField(
        separators=_MODEL_SEPARATORS, empty_value=None, joiner="\n", widget=ModelPickerWidget(), **kwargs
    )


def tag_list_field(**kwargs: Any) -> NameListField:
    kwargs.setdefault("help_text", "Labels for cost attribution, separated by commas or lines.")
    return NameListField(
        separators=_TAG_SEPARATORS, empty_value=[], joiner=", ", widget=forms.TextInput(attrs={"size": 60}), **kwargs
    )


class ModelPickerWidget(forms.Textarea):
    """A textarea (one name per line) that model_picker.js turns into chips
    and a search over the catalog; the catalog travels as JSON in the page."""

    def __init__(self) -> None:
        super().__init__(attrs={"rows": 4, "cols": 60, "class": "model-picker-source"})

    class Media:
        js = ["gateway/model_picker.js"]
        css = {"all": ["gateway/model_picker.css"]}

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        textarea = super().render(name, value, attrs, renderer)
        catalog = [{"name": n.name, "kind": n.kind} for n in catalog_names()]
        element_id = f"{(attrs or {}).get('id') or 'id_' + name}-catalog"
        return format_html("{}{}", textarea, json_script(catalog, element_id))
