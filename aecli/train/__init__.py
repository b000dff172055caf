"""Training: fit() runs the loop (loop.py) on a run's state (run.py); calibration follows it."""

from aecli.train.loop import fit, learning_rate
from aecli.train.run import CallbackList, Callbacks, History, Split, model_config_for, resume_settings

__all__ = [
    "CallbackList", "Callbacks", "History", "Split", "fit", "learning_rate", "model_config_for", "resume_settings",
]  # fmt: skip
