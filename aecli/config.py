"""Settings for models and training: dataclass defaults, then a YAML file, then flags.

Config flows one way and is stored whole in the model file, so a model is rebuilt from its own
file with no other input. This module stays free of torch so the CLI can import it at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aecli.errors import UsageError

VARIANTS = ("ae", "denoising", "vae")  # the registry in aecli.models checks it holds exactly these
SCHEDULES = ("cosine", "constant")

# Training defaults per variant. The seed recipe (Adam at 1e-3, batches of 128) suits the
# bottleneck models; a denoiser learns local detail, which wants more and smaller steps.
TRAIN_DEFAULTS = {
    "ae": {"epochs": 10, "batch_size": 128, "lr": 1e-3},
    "denoising": {"epochs": 20, "batch_size": 32, "lr": 2e-3},
    "vae": {"epochs": 10, "batch_size": 128, "lr": 1e-3},
}
ARCHS = ("conv", "unet")
LOSSES = ("mse", "bce")
NOISES = ("gaussian", "salt-pepper", "mask", "mixed")


@dataclass
class ModelConfig:
    """Everything a variant's class needs to build itself and its training objective."""

    variant: str = "ae"
    arch: str | None = None  # None: conv for ae/vae; unet for denoising (skips keep detail)
    channels: int | None = None  # None: taken from the first input image (1 grey, 3 colour)
    image_size: int | None = None  # None: taken from the first input image; others are resized
    latent_dim: int = 32  # one vector of this length per image from encode()
    widths: list[int] | None = None  # None: one stride-2 stage per halving down to about 4x4
    loss: str = "mse"  # pixel reconstruction loss: mse, or bce for near-binary images
    sigma: float = 0.2  # denoising: noise strength (gaussian std, or fraction of pixels hit)
    noise: str = "gaussian"  # denoising: gaussian, salt-pepper, mask, or mixed (one per batch)
    beta: float = 1.0  # vae: weight of the KL term (beta-VAE); 1 is the true ELBO

    def resolved(self, channels: int, image_size: int) -> ModelConfig:
        """Fill what the data decides (channels, size) and the defaults that depend on them."""
        arch = self.arch or ("unet" if self.variant == "denoising" else "conv")
        size = self.image_size or image_size
        return dataclasses.replace(
            self,
            arch=arch,
            channels=self.channels or channels,
            image_size=size,
            widths=list(self.widths) if self.widths else default_widths(size, arch),
        )


@dataclass
class TrainConfig:
    """How to train; stored in the model file so `--resume` and `ae info` know it too."""

    epochs: int | None = None  # None: the variant's default (TRAIN_DEFAULTS)
    batch_size: int | None = None  # None: the variant's default
    lr: float | None = None  # None: the variant's default; Adam's peak learning rate
    lr_schedule: str = "cosine"  # cosine: warm up over 5 % of steps, then decay to 0; or constant
    val_split: float = 0.1  # held out for validation loss and score calibration
    seed: int = 0  # fixed by default: the same command gives the same model on CPU
    device: str = "auto"
    workers: int | None = None  # None: 0 for in-memory arrays, a few for image files
    resize: bool = True  # False: images of another size than the model's are an error
    skip_bad: bool = False  # False: an unreadable image stops training, naming it; True: warn and skip it
    patch_size: int | None = None  # train on random square crops of this size (the model's size)
    patches_per_image: int = 16  # crops per image per epoch, with patch_size


@dataclass
class Settings:
    """The two halves a YAML file or the flags of `ae train` fill, keyed flat."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def as_flat_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.train)}


def default_widths(image_size: int, arch: str) -> list[int]:
    """Channel widths per stride-2 stage: enough stages to reach about 4x4, doubling each time.

    The unet starts narrower: its skip connections carry detail, and full-resolution
    convolutions are where its time goes on a CPU.
    """
    stages = max(1, round(math.log2(image_size / 4)))
    base = 16 if arch == "unet" else 32
    return [min(base * 2**i, 256) for i in range(stages)]


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Dataclass defaults, then the YAML file's keys, then the non-None flag overrides."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_yaml(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    model_keys, train_keys = _field_names(ModelConfig), _field_names(TrainConfig)
    model = ModelConfig(**{k: v for k, v in values.items() if k in model_keys})
    _choice("variant", model.variant, VARIANTS)
    defaults = TRAIN_DEFAULTS[model.variant]
    train = TrainConfig(**{**defaults, **{k: v for k, v in values.items() if k in train_keys}})
    settings = Settings(model, train)
    validate(settings)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = _field_names(ModelConfig) | _field_names(TrainConfig)
    clean = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UsageError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        clean[name] = value
    return clean


def validate(settings: Settings) -> None:
    """Reject impossible settings with a message naming the setting, before any work starts."""
    m, t = settings.model, settings.train
    _choice("variant", m.variant, VARIANTS)
    if m.arch is not None:
        _choice("arch", m.arch, ARCHS)
    _choice("loss", m.loss, LOSSES)
    _choice("noise", m.noise, NOISES)
    _choice("lr_schedule", t.lr_schedule, SCHEDULES)
    _typed("latent_dim", m.latent_dim, int, low=1)
    _typed("epochs", t.epochs, int, low=1)
    _typed("batch_size", t.batch_size, int, low=1)
    _typed("seed", t.seed, int, low=0)
    _typed("lr", t.lr, float, low=0, low_open=True)
    _typed("sigma", m.sigma, float, low=0, high=1)
    _typed("beta", m.beta, float, low=0)
    _typed("val_split", t.val_split, float, low=0, high=0.9)
    if m.channels is not None and m.channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3, got {m.channels}")
    if m.image_size is not None:
        _typed("image_size", m.image_size, int, low=4)
    if t.workers is not None:
        _typed("workers", t.workers, int, low=0)
    if t.patch_size is not None:
        _typed("patch_size", t.patch_size, int, low=8)
        if m.image_size is not None and m.image_size != t.patch_size:
            raise UsageError(f"with patch_size the model's size is the patch size; image_size {m.image_size} differs")
    _typed("patches_per_image", t.patches_per_image, int, low=1)
    if m.widths is not None:
        if not isinstance(m.widths, list) or not all(isinstance(w, int) and w > 0 for w in m.widths):
            raise UsageError(f"widths must be a list of positive integers, got {m.widths!r}")


def _choice(name: str, value: Any, known: tuple[str, ...]) -> None:
    if value not in known:
        raise UsageError(f"unknown {name} '{value}' (known: {', '.join(known)})")


def _typed(name, value, kind, low=None, high=None, low_open=False) -> None:
    number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if kind is float and not number_ok:
        raise UsageError(f"{name} must be a number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise UsageError(f"{name} must be {bounds}, got {value}")


def to_yaml(settings: Settings) -> str:
    import yaml

    return yaml.safe_dump(settings.as_flat_dict(), sort_keys=False)


def to_json(obj: Any) -> str:
    """Dataclasses to the compact JSON stored in model-file metadata."""
    return json.dumps(dataclasses.asdict(obj), separators=(",", ":"))


def model_config_from_json(text: str) -> ModelConfig:
    data = json.loads(text)
    return ModelConfig(**{k: v for k, v in data.items() if k in _field_names(ModelConfig)})


def train_config_from_json(text: str) -> TrainConfig:
    data = json.loads(text)
    if "strict" in data:  # earlier files stored the opposite flag, `strict`
        data["skip_bad"] = not data.pop("strict")
    return TrainConfig(**{k: v for k, v in data.items() if k in _field_names(TrainConfig)})
