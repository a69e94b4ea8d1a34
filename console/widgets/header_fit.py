"""Fitting one header status line into the terminal's width by urgency, never by cutting.

A line is a list of parts (a slot: its dim label, then its value in one or more forms, longest first). When the line
is too wide, the least urgent part gives way first, in three phases, each stopping as soon as the line fits:

1. calm parts (level ok, info, n/a), least urgent first: their shorter form, then hidden ("kill switches none" is
   not worth a cut alarm);
2. alarm parts (warn, crit), least urgent first: their shorter form;
3. alarm parts, least urgent first: hidden, the most urgent one always kept; the line then ends with "+N more"
   in the colour of the worst hidden one, so an operator knows there is more and widens the terminal;
4. what hiding freed goes back to the longer forms of the parts still shown, most urgent first.

A value is shown whole or not at all: no word or number is ever cut ("incidents 1 (1" is what this replaced).
Urgency is (level, place in the alarm order): see header.ALARM_ORDER.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text

SEPARATOR = " │ "
ALARM_LEVEL = 3  # LEVELS.index("warn"): warn and crit parts are alarms


@dataclass(frozen=True, slots=True)
class Part:
    label: str
    forms: tuple[str, ...]  # the value's texts, longest first (at least one)
    style: str
    level: int  # index in header.LEVELS
    urgency: tuple[int, int]  # bigger is more urgent


def _width(parts: list[Part], choice: list[int], shown: list[bool], marker: str) -> int:
    used = 1  # the line's leading blank
    count = 0
    for part, form, visible in zip(parts, choice, shown, strict=True):
        if not visible:
            continue
        used += cell_len(part.label) + 1 + cell_len(part.forms[form])
        count += 1
    used += cell_len(SEPARATOR) * max(0, count - 1)
    if marker:
        used += cell_len(SEPARATOR) + cell_len(marker)
    return used


def _marker(parts: list[Part], shown: list[bool]) -> tuple[str, str]:
    hidden = [p for p, visible in zip(parts, shown, strict=True) if not visible and p.level >= ALARM_LEVEL]
    if not hidden:
        return "", ""
    worst = max(hidden, key=lambda p: p.urgency)
    return f"+{len(hidden)} more", worst.style


def fit_parts(parts: list[Part], width: int) -> tuple[list[int], list[bool]]:
    """Which form of each part to show (an index into its forms) and which parts to show, for `width` cells."""
    choice = [0] * len(parts)
    shown = [True] * len(parts)

    def fits() -> bool:
        return _width(parts, choice, shown, _marker(parts, shown)[0]) <= width

    order = sorted(range(len(parts)), key=lambda i: parts[i].urgency)  # least urgent first
    calm = [i for i in order if parts[i].level < ALARM_LEVEL]
    alarms = [i for i in order if parts[i].level >= ALARM_LEVEL]
    keep = order[-1] if order else None  # the most urgent part is never hidden
    for i in calm:
        while not fits() and choice[i] < len(parts[i].forms) - 1:
            choice[i] += 1
        if not fits() and i != keep:
            shown[i] = False
    for i in alarms:
        while not fits() and choice[i] < len(parts[i].forms) - 1:
            choice[i] += 1
    for i in alarms:
        if fits():
            break
        if i != keep:
            shown[i] = False
    # What hiding freed goes back to the longer forms of what is still shown, most urgent first.
    for i in reversed(order):
        while shown[i] and choice[i] > 0:
            choice[i] -= 1
            if not fits():
                choice[i] += 1
                break
    return choice, shown


def fit_line(parts: list[Part], width: int) -> Text:
    """The status line: " label value │ label value …", fitted to `width` cells (see the module's docstring)."""
    choice, shown = fit_parts(parts, width)
    line = Text(" ", end="")
    first = True
    for part, form, visible in zip(parts, choice, shown, strict=True):
        if not visible:
            continue
        if not first:
            line.append(SEPARATOR, style="dim")
        first = False
        line.append(f"{part.label} ", style="dim")
        line.append(part.forms[form], style=part.style)
    marker, style = _marker(parts, shown)
    if marker:
        line.append(SEPARATOR, style="dim")
        line.append(marker, style=style)
    if line.cell_len > width:
        # Only when even the most urgent part alone is wider than the terminal: say it was cut.
        line.truncate(max(1, width), overflow="ellipsis")
    return line


def fit_sentence(sentence: str, width: int) -> str:
    """The hint line's sentence in `width` cells, keeping what to press: an alarm reads "what is wrong: what to
    press", so when it is too wide the description is cut (with "…"), never the keys at its end."""
    if width <= 0 or cell_len(sentence) <= width:
        return sentence
    what, colon, action = sentence.rpartition(": ")
    if not colon or cell_len(action) + 3 > width:  # nothing to keep, or not even the action fits: cut the end
        return sentence
    room = width - cell_len(action) - len(colon) - 1
    cut = what
    while cut and cell_len(cut) > room:
        cut = cut[:-1]
    return f"{cut.rstrip()}…{colon}{action}"
