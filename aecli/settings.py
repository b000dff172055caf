"""A setting is declared once: its name, type, default, help, and who owns it.

From the declarations come the options of `ae train` (with their help and shown defaults), the
keys a YAML config may hold and their checks, `--print-config`, and through `--help` docs/cli.md.
This module and every declaration stay free of torch, so `ae --help` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aecli.errors import UsageError

SHARED = "all variants"  # the owner of a setting every objective uses


class Span:
    """A setting's kind: one number, or a range of them drawn from per image.

    On the command line and in YAML a range is "LO:HI" (YAML may also say [LO, HI]); it is kept
    and stored as the list [LO, HI] of floats. One number stays a number and means what it did.
    """


class Names:
    """A setting's kind: a list of names (a conditional model's classes). On the command line and in
    YAML "a,b,c" (YAML may also say [a, b, c]); kept and stored as a list of strings."""


def parse_span(text: str, name: str = "value") -> float | list[float]:
    """'0.2' -> 0.2 and '0:0.2' -> [0.0, 0.2]; anything else is a UsageError naming the setting."""
    parts = str(text).split(":")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(map(math.isfinite, numbers)):
        raise UsageError(f"{name} must be a number or a range LO:HI like 0:0.2, got '{text}'")
    return numbers[0] if len(numbers) == 1 else numbers


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: type | None = None  # int, float, str, bool, list (of ints), Span or Names; None: the default's type
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    unset: str | None = None  # what a default of None stands for, as --help shows it
    model: bool = False  # True: part of the model's config, stored and fixed once trained
    owner: str = SHARED  # the objective it belongs to (its variant name), or SHARED

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Reject a value of the wrong type or out of range, naming the setting; None is 'unset'."""
        if value is None:
            if self.default is not None:
                raise UsageError(f"{self.name} needs a value (default {self.default})")
            return
        if self.choices and value not in self.choices:
            raise UsageError(f"unknown {self.name} '{value}' (known: {', '.join(map(str, self.choices))})")
        kind = self.type
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if kind is bool and not isinstance(value, bool):
            raise UsageError(f"{self.name} must be true or false, got {value!r}")
        if kind is int and not is_int:
            raise UsageError(f"{self.name} must be an integer, got {value!r}")
        if kind is float and not (is_int or isinstance(value, float)):
            raise UsageError(f"{self.name} must be a number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise UsageError(f"{self.name} must be a string, got {value!r}")
        if kind is list and not (
            isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise UsageError(f"{self.name} must be a list of positive integers, got {value!r}")
        if kind is Names and not (
            isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise UsageError(f"{self.name} must be a list of names like a,b, got {value!r}")
        if kind is Names and len(set(value)) < len(value):
            raise UsageError(f"{self.name} names one twice: {', '.join(value)}")
        is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        if kind is Span and not is_number(value):
            if not (isinstance(value, list) and len(value) == 2 and all(map(is_number, value))):
                raise UsageError(f"{self.name} must be a number or a range LO:HI like 0:0.2, got {value!r}")
            if value[0] >= value[1]:
                raise UsageError(f"{self.name}'s range must go from low to high, got {_text(value, Span)}")
        if kind in (int, float, Span):
            numbers = value if isinstance(value, list) else [value]
        else:
            numbers = value if kind is list else []
        if not all(map(math.isfinite, numbers)):  # NaN passes every comparison below
            raise UsageError(f"{self.name} must be a finite number, got {_text(value, Span) if kind is Span else value}")
        for number in numbers:
            too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
            too_high = self.high is not None and number > self.high
            if too_low or too_high:
                bounds = f"{'>' if self.low_open else '>='} {self.low}"
                bounds += f" and <= {self.high}" if self.high is not None else ""
                raise UsageError(f"{self.name} must be {bounds}, got {_text(value, Span) if kind is Span else value}")

    def describe_default(self, overrides: dict[str, Any] | None = None) -> str:
        """The default as --help shows it, with the variants that change it: '10; 20 for denoising'."""
        text = self.unset if self.default is None and self.unset else _text(self.default, self.type)
        by_value: dict[str, list[str]] = {}
        for variant, value in (overrides or {}).items():
            if value != self.default:
                by_value.setdefault(_text(value, self.type), []).append(variant)
        return "; ".join([text, *(f"{value} for {' and '.join(names)}" for value, names in by_value.items())])


def _text(value: Any, kind: type | None = None) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return (":" if kind is Span else ",").join(map(str, value))
    return "none" if value is None else str(value)


def index(settings: list[Setting]) -> dict[str, Setting]:
    """Name to declaration; two declarations of one name are a programming error."""
    named: dict[str, Setting] = {}
    for setting in settings:
        if setting.name in named:
            raise ValueError(f"setting {setting.name!r} is declared twice")
        named[setting.name] = setting
    return named
