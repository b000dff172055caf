"""The settings of a run, resolved one way: declared defaults, the variant's defaults, a YAML file, flags.

The settings every variant shares are declared here; an objective declares its own in its file
(models/objectives/). The resolved config is stored whole in the model file, so a model is
rebuilt from its own file with no other input. Torch-free, so the CLI can import it at start-up.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aecli.errors import UsageError
from aecli.settings import Names, Setting, Span, index, parse_span

FIRST_IMAGE = "the first image's"

MODEL_SETTINGS = (
    Setting("variant", "ae", "What the model learns: one of the variants listed above.", model=True),
    Setting("arch", "conv", "conv (a true bottleneck) or unet (skip connections; keeps detail).",
            choices=("conv", "unet"), model=True),
    Setting("bottleneck", True, "A Linear bottleneck; --no-bottleneck: fully convolutional, any image size, "
            "a spatial latent of latent-dim channels.", model=True),
    Setting("latent_dim", 32, "Length of each image's latent vector (channels of a spatial one).", low=1, model=True),
    Setting("loss", "mse", "Pixel loss: mse, or bce for near-binary images.", choices=("mse", "bce"), model=True),
    Setting("image_size", None, "Model input size (square); images of other sizes are fitted to it (--resize).",
            kind=int, low=4, unset=FIRST_IMAGE, model=True),
    # pad keeps every pixel at its proportions: defects at the border stay; stored, so every command fits alike
    Setting("resize", "pad", "How images of another shape meet the model's square: pad (aspect kept, edges "
            "extended), crop (aspect kept, the centre) or stretch.", choices=("pad", "crop", "stretch"), model=True),
    Setting("channels", None, "1 (grey) or 3 (colour).", kind=int, choices=(1, 3), unset=FIRST_IMAGE, model=True),
    # one stride-2 stage per halving down to about 4x4: see default_widths
    Setting("widths", None, "Channels per stride-2 stage, e.g. 32,64,128.", kind=list, low=1,
            unset="doubling down to about 4x4", model=True),
    Setting("upsample", "transpose", "How the decoder doubles its maps: resize (nearest, then a 3x3 "
            "convolution; no checkerboard marks) or transpose (a transposed 4x4 convolution).",
            choices=("transpose", "resize"), model=True),
)  # fmt: skip

TRAIN_SETTINGS = (
    # the seed recipe: Adam at 1e-3 on batches of 128, for ten passes
    Setting("epochs", 10, "Passes over the training images; --resume may raise it.", low=1),
    # 10 epochs of 1,000 tiles at batch 128 are 80 steps: a model that has learnt only the mean image
    Setting("min_steps", 400, "Unless --epochs is given, train for at least this many steps: small data gets "
            "more passes (0: off).", low=0),
    Setting("batch_size", 128, "Images per step.", low=1),
    Setting("lr", 1e-3, "Adam's peak learning rate.", low=0, low_open=True),
    Setting("lr_schedule", "cosine", "cosine (5% warm-up, decay to 0) or constant.", choices=("cosine", "constant")),
    Setting("val_split", 0.1, "Fraction held out for validation and calibration.", low=0, high=0.9),
    # fixed, so the same command gives the same model on CPU
    Setting("seed", 0, "Seed for split, shuffle and noise: same seed, same model on CPU.", low=0),
    Setting("patch_size", None, "Train on random crops of this size (the model's size), e.g. for photos.",
            kind=int, low=8, unset="whole images"),
    Setting("patches_per_image", 16, "With --patch-size: crops per image per epoch.", low=1),
    Setting("exact_size", False, "Images of another size than the model's are an error instead of being resized."),
    Setting("skip_bad", False, "Skip unreadable images with a warning each (and a count) instead of stopping."),
    # Adam's state is twice the weights: finished files leave it out unless asked
    Setting("keep_optimizer", False, "Keep Adam's state in the finished file (about 3x its size), so that "
            "--resume --epochs N can extend the run later."),
    Setting("device", "auto", "auto, cpu, cuda, cuda:N or mps.", unset="$AE_DEVICE, else auto"),
    Setting("workers", None, "Loader processes decoding images.", kind=int, low=0,
            unset="0 for arrays or on 2 cores or fewer, else up to 4"),
    # a GPU steps a small model faster than a DataLoader feeds it: benchmarks/gpu.py
    Setting("preload", "auto", "Decode the training images once and keep them on the device (8-bit ones as "
            "uint8): yes, no (read them again each epoch) or auto (yes when they fit in a quarter of its free memory).",
            choices=("auto", "yes", "no")),
    Setting("channels_last", "auto", "Train in the channels-last memory layout (NHWC): yes, no, or auto "
            "(yes on CUDA, where it measured faster).", choices=("auto", "yes", "no")),
    Setting("compile", False, "Compile the training step with torch.compile: a slow start, then steps that may run "
            "faster (on a CPU the unet's 1.27x, the small conv's 0.92x: docs/benchmarks.md). Where it fails, "
            "training goes on without it."),
)  # fmt: skip
RESUME_MAY_CHANGE = ("epochs", "device", "workers", "keep_optimizer", "preload", "channels_last", "compile")  # how far, where, and what the file keeps


def objective_settings() -> list[Setting]:
    """Every objective's own settings, in registry order."""
    from aecli.models.registry import list_variants, objective_class

    return [s for name in list_variants() for s in objective_class(name).settings]


def all_settings() -> dict[str, Setting]:
    """Every setting a YAML file or a flag may name, whichever variant it belongs to."""
    return index([*MODEL_SETTINGS, *TRAIN_SETTINGS, *objective_settings()])


def variant_defaults(name: str) -> dict[str, Any]:
    """The shared settings' defaults that a variant changes (e.g. denoising: arch unet, 20 epochs)."""
    from aecli.models.registry import objective_class

    return dict(objective_class(name).defaults)


class _Section:
    """The values of declared settings, read as attributes (config.latent_dim); immutable."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__["_values"] = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: use replace({name}=...)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.as_dict() == self.as_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any):
        return type(self)(**{**self._values, **changes})


def _fill(declared: list[Setting], defaults: dict[str, Any], values: dict[str, Any], what: str) -> dict[str, Any]:
    """Declared defaults, then `defaults`, then `values` (None: not given); unknown names are bugs."""
    names = [s.name for s in declared]
    unknown = set(values) - set(names)
    if unknown:
        raise TypeError(f"{what} has no setting {', '.join(sorted(unknown))}")
    filled = {s.name: s.default for s in declared}
    filled.update({k: v for k, v in defaults.items() if k in filled})
    filled.update({k: v for k, v in values.items() if v is not None})
    return filled


class ModelConfig(_Section):
    """What builds the model: the shared model settings and the variant's own."""

    def __init__(self, **values: Any):
        variant = values.get("variant") or "ae"
        declared = model_settings(variant)
        super().__init__(_fill(declared, variant_defaults(variant), {**values, "variant": variant}, "a model config"))

    def resolved(self, channels: int, image_size: int) -> ModelConfig:
        """Fill what the data decides (channels, size) and the defaults that depend on them (the
        objective's too)."""
        from aecli.models.registry import objective_class

        size = self.image_size or image_size
        filled = self.replace(
            channels=self.channels or channels,
            image_size=size,
            widths=list(self.widths) if self.widths else default_widths(size, self.arch),
        )
        return objective_class(self.variant).resolved(filled)


class TrainConfig(_Section):
    """How to train; stored in the model file so `--resume` and `ae info` know it too."""

    def __init__(self, **values: Any):
        super().__init__(_fill(list(TRAIN_SETTINGS), {}, values, "a training config"))


def model_settings(variant: str) -> list[Setting]:
    from aecli.models.registry import objective_class

    return [*MODEL_SETTINGS, *objective_class(variant).settings]


@dataclass
class Settings:
    """The two halves a YAML file or the flags of `ae train` fill, keyed flat."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ignored: tuple[str, ...] = ()  # flags given that belong to another variant

    def as_flat_dict(self) -> dict[str, Any]:
        return {**self.model.as_dict(), **self.train.as_dict()}


def default_widths(image_size: int, arch: str) -> list[int]:
    """Channel widths per stride-2 stage: enough stages to reach about 4x4, doubling each time.

    The unet starts narrower: its skip connections carry detail, and full-resolution
    convolutions are where its time goes on a CPU.
    """
    stages = max(1, round(math.log2(image_size / 4)))
    base = 16 if arch == "unet" else 32
    return [min(base * 2**i, 256) for i in range(stages)]


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Declared defaults, the variant's defaults, the YAML file's keys, then the non-None flags.

    A key set to null keeps its default. Epochs given (by file or flag) turn min_steps off unless
    it is given too, so --epochs N means N passes. Settings of another variant than the chosen one (a YAML
    file shared by several) are ignored; flags among them are listed in `ignored`.
    """
    from aecli.models.registry import objective_class

    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_yaml(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    variant = values.get("variant") or "ae"
    objective_class(variant)  # an unknown variant is an error that lists the known ones
    declared = index([*model_settings(variant), *TRAIN_SETTINGS])
    ignored = tuple(k for k, v in overrides.items() if v is not None and k not in declared)
    values = {k: v for k, v in values.items() if k in declared and v is not None}  # null: the default
    defaults = variant_defaults(variant)
    if "epochs" in values:  # asked for: taken as given
        values.setdefault("min_steps", 0)
    model = ModelConfig(**{k: v for k, v in values.items() if declared[k].model})
    train = TrainConfig(**{**{k: v for k, v in defaults.items() if k in declared and not declared[k].model},
                           **{k: v for k, v in values.items() if not declared[k].model}})  # fmt: skip
    settings = Settings(model, train, ignored)
    validate(settings)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a YAML config (not UTF-8 text)") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = all_settings()
    clean = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UsageError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        if known[name].type is Span and isinstance(value, str):  # "0:0.2"
            value = parse_span(value, f"{path}: {name}")
        elif known[name].type is Names and isinstance(value, str):  # "a,b": as the flag takes it
            value = [part.strip() for part in value.split(",") if part.strip()]
        elif known[name].type is Span and isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            value = [float(v) for v in value]  # [0, 0.2]: stored as 0:0.2 would be
        clean[name] = value
    return clean


def validate(settings: Settings) -> None:
    """Reject impossible settings with a message naming the setting, before any work starts."""
    m, t = settings.model, settings.train
    for section, declared in ((m, model_settings(m.variant)), (t, TRAIN_SETTINGS)):
        for setting in declared:
            setting.check(getattr(section, setting.name))
    if t.patch_size is not None and m.image_size is not None and m.image_size != t.patch_size:
        raise UsageError(f"with patch_size the model's size is the patch size; image_size {m.image_size} differs")


def to_yaml(settings: Settings) -> str:
    import yaml

    return yaml.safe_dump(settings.as_flat_dict(), sort_keys=False)


def to_json(section: _Section) -> str:
    """A config as the compact JSON stored in model-file metadata."""
    return json.dumps(section.as_dict(), separators=(",", ":"))


def model_config_from_json(text: str) -> ModelConfig:
    """A stored model config; keys it does not declare (another variant's, in format 1 files) are dropped."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("model_config is not a JSON object")
    variant = data.get("variant") or "ae"
    names = {s.name for s in model_settings(variant)}
    data.setdefault("resize", "stretch")  # how files before format 3 fitted every image
    data.setdefault("upsample", "transpose")  # every decoder before the setting existed
    data.setdefault("residual", False)  # denoisers before it predicted the clean image (dropped for the others)
    return ModelConfig(**{k: v for k, v in data.items() if k in names})


def train_config_from_json(text: str) -> TrainConfig:
    data = json.loads(text)
    if "strict" in data:  # earlier files stored the opposite flag, `strict`
        data["skip_bad"] = not data.pop("strict")
    if isinstance(data.get("resize"), bool):  # before format 3: resize=false made other sizes an error
        data["exact_size"] = not data.pop("resize")
    data.setdefault("min_steps", 0)  # files from before it trained the epochs they were given
    names = {s.name for s in TRAIN_SETTINGS}
    return TrainConfig(**{k: v for k, v in data.items() if k in names})
