"""The objective registry, kept small as torchvision's models._api keeps it.

Objectives register by name (their `--variant`); a duplicate name is an error and an unknown one
lists the known ones. Every module in aecli/models/objectives is imported on first use, so a new
objective is one new file there. Torch-free: `ae train --help` reads the objectives' settings.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from aecli.errors import UsageError

if TYPE_CHECKING:
    from aecli.models.objectives.base import Objective

T = TypeVar("T", bound="type[Objective]")
_OBJECTIVES: dict[str, type[Objective]] = {}
_discovered = False


def register(cls: T) -> T:
    """Class decorator: make an objective known by its `name`, its settings marked as its own.

    An objective's settings belong to the model's config: stored in the file, fixed once trained.
    """
    if cls.name in _OBJECTIVES:
        raise ValueError(f"variant {cls.name!r} is already registered")
    cls.settings = tuple(dataclasses.replace(s, owner=cls.name, model=True) for s in cls.settings)
    _OBJECTIVES[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        from aecli.models import objectives

        for module in pkgutil.iter_modules(objectives.__path__):
            importlib.import_module(f"{objectives.__name__}.{module.name}")


def list_variants() -> list[str]:
    _discover()
    return list(_OBJECTIVES)


def objective_class(name: str) -> type[Objective]:
    _discover()
    try:
        return _OBJECTIVES[name]
    except KeyError:
        raise UsageError(f"unknown variant '{name}' (known: {', '.join(_OBJECTIVES)})") from None
