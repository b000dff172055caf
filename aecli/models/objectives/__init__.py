"""One file per objective; each registers itself with `@register` (see base.py for the contract)."""
