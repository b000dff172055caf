"""Model variants, registered by name: `create_model(config)` builds one, `list_variants()` names them."""

from aecli.models import denoising, plain, vae  # noqa: F401  (each registers its variant)
from aecli.models._registry import create_model, list_variants

__all__ = ["create_model", "list_variants"]
