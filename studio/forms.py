"""Admin form fields that spare operators typing JSON: a list of phrases is edited as one
phrase a line and stored as the same JSON list of strings."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError


class PhraseListField(forms.CharField):
    """A textarea of one phrase a line, cleaned to a list of strings: each line trimmed, blank
    lines dropped, and a clear error for a line too long or too many lines."""

    widget = forms.Textarea

    def __init__(
        self,
        *,
        max_items: int = 50,
        max_item_length: int = 200,
        item_name: str = "phrase",
        **kwargs: Any,
    ) -> None:
        self.max_items = max_items
        self.max_item_length = max_item_length
        self.item_name = item_name
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("rows", min(max(max_items, 2), 6))

    def prepare_value(self, value: Any) -> Any:
        # The stored list (or what the operator typed, re-shown after an error) as lines.
        if isinstance(value, list | tuple):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list | tuple):
            lines = [str(item) for item in value]
        else:
            lines = str(value or "").splitlines()
        items = [line.strip() for line in lines if line.strip()]
        too_long = [n for n, item in enumerate(items, start=1) if len(item) > self.max_item_length]
        if too_long:
            raise ValidationError(
                "Line %(line)s is too long: at most %(limit)s characters a %(name)s.",
                code="item_too_long",
                params={"line": too_long[0], "limit": self.max_item_length, "name": self.item_name},
            )
        if len(items) > self.max_items:
            raise ValidationError(
                "Too many lines: at most %(limit)s, one %(name)s a line (you gave %(count)s).",
                code="too_many_items",
                params={"limit": self.max_items, "name": self.item_name, "count": len(items)},
            )
        return items

    def validate(self, value: Any) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value: Any) -> None:
        # CharField's length validators would measure the list, not a line: lines are checked
        # in to_python.
        return None

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial) != self.to_python(data)
        except ValidationError:
            return True


class EarlierTurnsField(forms.CharField):
    """Earlier turns of a test case as a short script instead of JSON: a line starting with
    "Customer:" or "Bot:" begins a turn, a line without one continues it. Stored as the same
    [{"role": "user"|"assistant", "content": ...}] list."""

    widget = forms.Textarea
    SPEAKERS = {"customer": "user", "bot": "assistant"}
    NAMES = {"user": "Customer", "assistant": "Bot"}

    def __init__(self, *, max_turns: int = 30, max_turn_length: int = 4000, **kwargs: Any):
        self.max_turns = max_turns
        self.max_turn_length = max_turn_length
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("rows", 4)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(
                f"{self.NAMES.get(str(turn.get('role')), 'Customer')}: {turn.get('content', '')}"
                for turn in value
                if isinstance(turn, dict)
            )
        return value

    def to_python(self, value: Any) -> list[dict[str, str]]:  # type: ignore[override]
        if isinstance(value, list | tuple):
            value = self.prepare_value(value)
        turns: list[dict[str, str]] = []
        for number, raw in enumerate(str(value or "").splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            speaker, colon, rest = line.partition(":")
            role = self.SPEAKERS.get(speaker.strip().casefold()) if colon else None
            if role is not None:
                turns.append({"role": role, "content": rest.strip()})
            elif turns:
                turns[-1]["content"] = f"{turns[-1]['content']}\n{line}".strip()
            else:
                raise ValidationError(
                    'Line %(line)s: start each turn with "Customer:" or "Bot:".',
                    code="no_speaker",
                    params={"line": number},
                )
        for number, turn in enumerate(turns, start=1):
            if not turn["content"]:
                raise ValidationError(
                    "Turn %(turn)s is empty: write what was said after the colon.",
                    code="empty_turn",
                    params={"turn": number},
                )
            if len(turn["content"]) > self.max_turn_length:
                raise ValidationError(
                    "Turn %(turn)s is too long: at most %(limit)s characters.",
                    code="turn_too_long",
                    params={"turn": number, "limit": self.max_turn_length},
                )
        if len(turns) > self.max_turns:
            raise ValidationError(
                "Too many earlier turns: at most %(limit)s.",
                code="too_many_turns",
                params={"limit": self.max_turns},
            )
        return turns

    def validate(self, value: Any) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value: Any) -> None:
        return None  # lengths are checked per turn in to_python

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial) != self.to_python(data)
        except ValidationError:
            return True
