"""The variant registry: names to classes, as torchvision's models._api keeps it small."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from aecli.config import ModelConfig
from aecli.errors import UsageError

_VARIANTS: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _VARIANTS:
            raise ValueError(f"variant {name!r} is already registered")
        _VARIANTS[name] = cls
        return cls

    return add


def list_variants() -> list[str]:
    return list(_VARIANTS)


def create_model(config: ModelConfig) -> nn.Module:
    """Build the variant named in a resolved config (channels, size and widths filled in)."""
    try:
        cls = _VARIANTS[config.variant]
    except KeyError:
        known = ", ".join(_VARIANTS)
        raise UsageError(f"unknown variant '{config.variant}' (known: {known})") from None
    return cls(config)
