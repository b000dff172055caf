"""Typer options made from declared settings (aecli/settings.py), and help that groups them.

`ae train` takes one option per setting: `--latent-dim`, `--no-bottleneck`, `--widths 32,64`. Each
defaults to None ("not given"), so a YAML file's value shows through unless a flag overrides it;
the default that --help shows is the declared one, with the variants that change it.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from aecli.config import MODEL_SETTINGS, TRAIN_SETTINGS, objective_settings, variant_defaults
from aecli.errors import UsageError
from aecli.settings import SHARED, Names, Setting, Span, parse_span

MODEL_SECTION, TRAIN_SECTION = "Model options", "Training options"


def section(setting: Setting) -> str:
    if setting.owner != SHARED:
        return f"Options of --variant {setting.owner}"
    return MODEL_SECTION if setting.model else TRAIN_SECTION


def setting_options() -> list[inspect.Parameter]:
    """One keyword parameter per declared setting, in sections: model, training, then each variant's."""
    from aecli.models.registry import list_variants, objective_class

    variants = list_variants()
    overrides = {name: variant_defaults(name) for name in variants}
    params = []
    for setting in [*MODEL_SETTINGS, *TRAIN_SETTINGS, *objective_settings()]:
        changed = {v: d[setting.name] for v, d in overrides.items() if setting.name in d}
        help_text = setting.help
        if setting.name == "variant":
            listing = "; ".join(f"{v}: {objective_class(v).summary}" for v in variants)
            help_text = f"What the model learns. {listing}."
        params.append(_parameter(setting, help_text, setting.describe_default(changed)))
    return params


def _parameter(setting: Setting, help_text: str, shown: str) -> inspect.Parameter:
    kind, extra = setting.type, {}
    decls = [setting.flag]
    if kind is bool:
        decls = [f"{setting.flag}/--no-{setting.flag[2:]}"]
    elif kind is list:  # one comma-separated value (a list type would make the option repeatable)
        kind, extra = str, {"parser": parse_list, "metavar": "N,N,..."}
    elif kind is Names:  # one comma-separated value: --classes circle,square
        kind, extra = str, {"parser": parse_names, "metavar": "NAME,NAME,..."}
    elif kind is Span:  # one number, or LO:HI
        kind, extra = str, {"parser": _span_parser(setting.name), "metavar": "X|LO:HI"}
    option = typer.Option(*decls, help=help_text, show_default=shown, rich_help_panel=section(setting), **extra)
    return inspect.Parameter(
        setting.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[kind], option]
    )


def parse_list(text: str) -> list[int]:
    """A list setting on the command line: comma-separated integers, e.g. --widths 32,64,128."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 32,64,128, got '{text}'") from None


def parse_names(text: str) -> list[str]:
    """A names setting on the command line: comma-separated, e.g. --classes circle,square."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _span_parser(name: str):
    def parse(text: str) -> float | list[float] | str:
        try:
            return parse_span(text, name)
        except UsageError:
            return text  # the setting's check rejects it in one line, as it does a YAML value

    return parse


class SectionedCommand(TyperCommand):
    """Plain-text help with options in sections (their rich_help_panel), not one long list."""

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            title = "Arguments" if param.param_type_name == "argument" else getattr(param, "rich_help_panel", None)
            sections.setdefault(title or "Options", []).append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)
