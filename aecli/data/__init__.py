"""Inputs: resolve what the user named into an ImageSet, then stream it in batches."""

from aecli.data.inputs import Batch, ImageSet, open_inputs
from aecli.data.loader import batch_indices, default_workers, stream

__all__ = ["Batch", "ImageSet", "batch_indices", "default_workers", "open_inputs", "stream"]
