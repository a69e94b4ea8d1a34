"""Modal forms for operator actions: a reason (always), optionally a typed confirmation word, a mode choice, a JSON
editor, free-form fields. Every form validates on submit and shows the problem inline (never a traceback); Escape
cancels (the screen is dismissed with None).

    def done(result: FormResult | None) -> None: ...
    app.push_screen(FormModal("Approve ap-1234", body, fields=[...], confirm_word=None), done)

Untrusted text (tool arguments, names) goes into `body` as rich Text built with console.widgets.safe.literal /
printable, never as markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, RadioButton, RadioSet, Static, TextArea

from console.widgets.safe import printable


@dataclass(frozen=True, slots=True)
class Field:
    """One input of a form. kind: "input" (one line), "json" (a TextArea holding a JSON object), "choice" (a radio
    set of `choices`, the first selected unless `value` names another)."""

    id: str
    label: str
    kind: str = "input"
    value: str = ""
    placeholder: str = ""
    choices: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = ()


@dataclass(slots=True)
class FormResult:
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def reason(self) -> str:
        return str(self.values.get("reason", ""))


REASON = Field("reason", "Reason (goes to the audit log)", placeholder="why you are doing this")

Validator = Callable[[FormResult], str | None]  # returns a problem to show, or None when the values are fine


class FormModal(ModalScreen[FormResult | None]):
    DEFAULT_CSS = """
    FormModal {
        align: center middle;
        background: $background 60%;
    }
    FormModal > #form {
        width: 96;
        max-width: 95%;
        height: auto;
        max-height: 95%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    FormModal.-danger > #form {
        border: thick $error;
    }
    FormModal #form-title {
        text-style: bold;
        width: 1fr;
    }
    FormModal #form-body {
        height: auto;
        max-height: 20;
        margin-bottom: 1;
    }
    FormModal .form-label {
        color: $text-muted;
        margin-top: 0;
    }
    FormModal TextArea {
        height: 12;
    }
    FormModal RadioSet {
        layout: horizontal;
        height: auto;
        width: auto;
    }
    FormModal #form-error {
        color: $error;
        text-style: bold;
        height: auto;
    }
    FormModal #form-keys {
        color: $text-muted;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="modal_cancel", tooltip="Close without doing anything"),
        Binding("ctrl+s", "submit", "Submit", id="modal_submit", tooltip="Submit the form (Enter in the last field "
                "does the same)"),
    ]

    def __init__(self, title: str, body: Text | str = "", *, fields: list[Field] | tuple[Field, ...] = (REASON,),
                 confirm_word: str | None = None, validate: Validator | None = None, danger: bool = False,
                 submit_label: str = "Enter: confirm", live_body: Callable[[], Text] | None = None) -> None:
        super().__init__(classes="-danger" if danger else None)
        self.form_title = title
        self.body = body if isinstance(body, Text) else Text(printable(body, single_line=False), end="")
        self.live_body = live_body  # when given: the body is redrawn from it every second (countdowns keep counting)
        self.fields = list(fields)
        self.confirm_word = confirm_word
        self.validator = validate
        self.submit_label = submit_label

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Static(Text(printable(self.form_title, limit=200)), id="form-title", markup=False)
            with VerticalScroll(id="form-body"):
                yield Static(self.live_body() if self.live_body is not None else self.body, id="form-body-text",
                             markup=False)
            for spec in self.fields:
                yield Label(Text(spec.label), classes="form-label", markup=False)
                if spec.kind == "json":
                    yield TextArea(spec.value, id=f"field-{spec.id}", language=None, soft_wrap=True,
                                   show_line_numbers=False)
                elif spec.kind == "choice":
                    with RadioSet(id=f"field-{spec.id}"):
                        for choice in spec.choices:
                            yield RadioButton(choice, value=choice == (spec.value or spec.choices[0]),
                                              name=choice)
                else:
                    suggester = SuggestFromList(spec.suggestions, case_sensitive=False) if spec.suggestions else None
                    yield Input(spec.value, placeholder=spec.placeholder, id=f"field-{spec.id}", compact=True,
                                suggester=suggester)
            if self.confirm_word:
                yield Label(Text(f"Type {self.confirm_word} to confirm"), classes="form-label", markup=False)
                yield Input(placeholder=self.confirm_word, id="field-confirm", compact=True)
            yield Static("", id="form-error", markup=False)
            yield Static(Text(f"{self.submit_label} · Tab: next field · ctrl+s: submit · Esc: cancel"),
                         id="form-keys", markup=False)

    def on_mount(self) -> None:
        if self.live_body is not None:
            self.set_interval(1.0, self.redraw_body)
        first = next(iter(self.query("#form Input, #form TextArea, #form RadioSet")), None)
        if first is not None:
            first.focus()

    def redraw_body(self) -> None:
        if self.live_body is not None:
            self.query_one("#form-body-text", Static).update(self.live_body())

    def _inputs(self) -> list[Any]:
        return list(self.query("#form Input, #form TextArea"))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        inputs = self._inputs()
        if inputs and event.input is not inputs[-1]:
            self.focus_next()
            return
        self.action_submit()

    def values(self) -> FormResult:
        result = FormResult()
        for spec in self.fields:
            if spec.kind == "json":
                result.values[spec.id] = self.query_one(f"#field-{spec.id}", TextArea).text
            elif spec.kind == "choice":
                pressed = self.query_one(f"#field-{spec.id}", RadioSet).pressed_button
                result.values[spec.id] = pressed.name if pressed is not None else spec.choices[0]
            else:
                result.values[spec.id] = self.query_one(f"#field-{spec.id}", Input).value.strip()
        return result

    def show_error(self, problem: str) -> None:
        self.query_one("#form-error", Static).update(Text("✗ " + printable(problem, limit=300)))

    def action_submit(self) -> None:
        result = self.values()
        if self.confirm_word is not None:
            typed = self.query_one("#field-confirm", Input).value.strip()
            if typed != self.confirm_word:
                self.show_error(f"Type {self.confirm_word} exactly to confirm (you typed {typed!r}).")
                return
        for spec in self.fields:
            if spec.kind == "json":
                try:
                    parsed = json.loads(result.values[spec.id])
                except ValueError as exc:
                    self.show_error(f"{spec.label}: not valid JSON ({exc})")
                    return
                if not isinstance(parsed, dict):
                    self.show_error(f"{spec.label}: must be a JSON object {{...}}, got {type(parsed).__name__}")
                    return
                result.values[spec.id] = parsed
        if any(spec.id == "reason" for spec in self.fields) and not result.reason:
            self.show_error("A reason is required: it goes to the audit log with your name.")
            return
        if self.validator is not None:
            problem = self.validator(result)
            if problem:
                self.show_error(problem)
                return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)
