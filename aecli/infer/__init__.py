"""Streaming data through a trained model: encode, decode, denoise, sample, interpolate.

Each function takes a `Loaded` model (a model file on its device) and yields or returns batches,
so a Python user gets the same results as the `ae` commands, which only add files and progress.
Pixels are streamed batch by batch; only latent vectors (small) are ever gathered whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aecli import distributed, runtime, samplers
from aecli.io import modelfile
from aecli.config import ModelConfig
from aecli.data import Batch, ImageSet, batch_indices, stream
from aecli.data.images import IMAGE_SUFFIXES, layout, read_image, to_channels, to_size
from aecli.errors import AecliError, InputError, UsageError
from aecli.infer.tiles import apply_tiled
from aecli.models.capabilities import no_decoder


class Progress:
    """What the streaming functions report; the CLI draws a bar from it."""

    def start(self, total: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def skipped(self, message: str) -> None: ...


@dataclass
class Loaded:
    """A model file's model, in eval mode on the chosen device."""

    file: modelfile.ModelFile
    device: torch.device

    @property
    def config(self) -> ModelConfig:
        return self.file.config

    @property
    def model(self) -> torch.nn.Module:
        return self.file.model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's reconstruction (a denoiser's clean estimate) of a batch, on CPU, float32."""
        with torch.no_grad(), runtime.autocast(self.device):
            return self.model(runtime.to_device(x, self.device)).float().cpu()

    @property
    def capabilities(self):
        """What the model can do (models.model.Capabilities): commands ask this, not its name."""
        return self.model.capabilities

    def tiling(self, tiles: bool | None = None, batch_size: int = 256):
        """How scoring fits images to the model: None (resized to its size), or a Tiling (model-sized
        tiles at native resolution). tiles=None: tiles where the model was trained on patches."""
        from aecli.scoring.scores import Tiling

        patches = bool(self.file.train_config and self.file.train_config.patch_size)
        if tiles is False or (tiles is None and not patches):
            return None
        return Tiling(self.config.image_size, self.config.channels, batch_size)

    def require_classes(self, images: ImageSet, labels: str | None, doing: str) -> np.ndarray | None:
        """Each image's class number for a conditional model (from `labels`: folders, class or
        FILE.csv); None for the others, which take no labels."""
        classes = self.capabilities.classes
        if not classes:
            if labels is not None:
                raise UsageError(f"--labels: {self.file.path} is not a conditional model; it takes no classes")
            return None
        if labels is None:
            raise UsageError(
                f"{self.file.path} is conditional on its classes ({', '.join(classes)}): {doing} needs each image's "
                "class: give --labels folders, class or FILE.csv"
            )
        from aecli.data.classes import class_labels

        return class_labels(images, labels, classes, "--labels")[1]

    def class_number(self, name: str | None) -> int | None:
        """The number of a conditional model's class `name` (exact, else the one that differs in case
        alone); None for a model without classes, which takes no --class."""
        classes = self.capabilities.classes
        if not classes:
            if name is not None:
                raise UsageError(f"--class: {self.file.path} is not a conditional model; it has no classes")
            return None
        known = f"(known: {', '.join(classes)})"
        if name is None:
            raise UsageError(f"{self.file.path} is conditional on its classes: give --class NAME {known}")
        if name in classes:
            return classes.index(name)
        folded = [k for k, c in enumerate(classes) if c.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
        raise UsageError(f"unknown class '{name}' {known}")

    def class_numbers(self, names: list[str]) -> list[int]:
        """The numbers of several classes, in the order named; "all" alone: every class, in order
        (unless one is named "all")."""
        if names == ["all"] and "all" not in self.capabilities.classes:
            return list(range(len(self.capabilities.classes)))
        return [self.class_number(name) for name in names]

    def require_decoder(self) -> None:
        """Decoding a bare latent needs a decoder that runs from the latent alone (not a unet's, nor a
        residual denoiser's, whose output needs its input)."""
        if not self.capabilities.decode:
            raise UsageError(f"{self.file.path} cannot decode a latent alone: {no_decoder(self.config)}")


def load_model(path: Path, device: str | None = None) -> Loaded:
    chosen = runtime.choose_device(device)
    distributed.init(chosen)  # under torchrun: join the other processes before any work is shared
    loaded = modelfile.load(Path(path))
    loaded.model.to(chosen)
    return Loaded(loaded, chosen)


def batches(
    loaded: Loaded, images: ImageSet, rows: np.ndarray | None = None, *, batch_size: int = 256,
    workers: int | None = None, exact_size: bool = False, strict: bool = True, progress: Progress | None = None,
    native: bool = False, on_device: bool = False,
) -> Iterator[Batch]:  # fmt: skip
    """The images at `rows` (default: all) in order, in batches fitted to the model as it was
    trained (its `resize`: pad, crop or stretch), or at their own size and colour with native=True;
    exact_size makes another size an error. Skipped images are reported, fatal when strict.

    Pixels are on the CPU, or with on_device=True possibly already on the model's device (JPEGs
    decoded on a GPU: data.gpu_jpeg), for callers that only hand them to the model.

    Under torchrun each process takes its own contiguous block of the batches (see
    distributed.shard_batches), so every process must call this with the same rows.
    """
    cfg, progress = loaded.config, progress or Progress()
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    mine = distributed.shard_batches(batch_indices(rows, batch_size))
    progress.start(sum(len(b) for b in mine))
    loader = stream(
        images, mine,
        None if native else cfg.channels, None if native else cfg.image_size,
        workers=workers, resize=None if exact_size else cfg.resize, strict=strict,
        pin_memory=loaded.device.type == "cuda", device=loaded.device,
    )  # fmt: skip
    for batch in loader:
        if not on_device:
            batch = dataclasses.replace(batch, pixels=_on_cpu(batch.pixels))
        for message in batch.skipped:
            progress.skipped(message)
        progress.advance(len(batch.index) + len(batch.skipped))
        yield batch


def _on_cpu(pixels: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return pixels.cpu() if torch.is_tensor(pixels) else [x.cpu() for x in pixels]


@dataclass
class Latents:
    """One latent row per image that loaded, in input order, with where each row came from."""

    vectors: np.ndarray  # (N, latent size) float32, a spatial latent (C, h, w) flattened; or whole code numbers
    index: np.ndarray  # (N,) positions in the input set
    sources: list[str]  # a file path, or `array#row`
    skipped: int = 0
    shape: tuple[int, ...] = ()  # one image's latent before flattening: (latent_dim,), (C, h, w) or codes' (h, w)

    @classmethod
    def merge(cls, parts: list[Latents]) -> Latents:
        """Shards in order, as one (what distributed.gathered calls)."""
        return cls(
            np.concatenate([p.vectors for p in parts]), np.concatenate([p.index for p in parts]),
            [s for p in parts for s in p.sources], sum(p.skipped for p in parts), parts[0].shape,
        )  # fmt: skip


@torch.no_grad()
def encode(
    loaded: Loaded, images: ImageSet, *, batch_size: int = 256, workers: int | None = None, sample: bool = False,
    seed: int = 0, exact_size: bool = False, strict: bool = True, progress: Progress | None = None,
    labels: str | None = None, continuous: bool = False,
) -> Latents:  # fmt: skip
    """Latent vectors of every image; a VAE gives its posterior mean, or a draw with sample=True.
    A model with a codebook (a VQ-VAE) gives each image's grid of code numbers, flat, as the
    smallest integer type that holds them; with continuous=True, the code vectors instead.

    A conditional model (capabilities.classes) needs each image's class: `labels` says where to
    read it, as `ae train --condition` does (folders, class or FILE.csv).

    A draw is seeded per image from (seed, its position in `images`), as add_noise is, so an image
    gets the same draw whatever the batch size, the images skipped before it or the process count.
    Under torchrun each process encodes its block of the batches; distributed.gathered joins them.
    """
    this = f"this model (variant {loaded.config.variant})"
    if sample and loaded.config.variant != "vae":
        raise UsageError(f"--sample draws from a VAE's posterior; {this} encodes an image to one point")
    if continuous and not loaded.capabilities.codebook:
        raise UsageError(f"--continuous gives a vqvae's code vectors, not its code numbers; {this} has none")
    classes = loaded.require_classes(images, labels, "encoding")
    codebook = 0 if continuous else loaded.capabilities.codebook
    vectors, index, skipped = _Gathered(), [], 0
    stream_options = dict(
        batch_size=batch_size, workers=workers, exact_size=exact_size, strict=strict, progress=progress
    )
    for batch in batches(loaded, images, on_device=True, **stream_options):
        skipped += len(batch.skipped)
        if not len(batch.index):
            continue
        x = runtime.to_device(batch.pixels, loaded.device)
        noise = torch.stack([_draw(loaded.capabilities.latent_shape, seed, i) for i in batch.index]) if sample else None
        known = None if classes is None else torch.as_tensor(classes[batch.index.numpy()])
        with runtime.autocast(loaded.device):
            z = loaded.model.codes(x) if codebook else loaded.model.encode(x, noise, known).float()
        vectors.add(z.flatten(1))
        index.append(batch.index.numpy())
    shape = loaded.capabilities.latent_shape[1:] if codebook else loaded.capabilities.latent_shape
    kind = np.min_scalar_type(codebook - 1) if codebook else np.float32
    rows = vectors.array() if index else np.empty((0, math.prod(shape)), kind)
    where = np.concatenate(index) if index else np.empty(0, np.int64)
    sources = [images.name(int(i)) for i in where]
    return Latents(rows.astype(kind), where, sources, skipped, shape)


class _Gathered:
    """Rows left where the model made them and copied to the CPU together, so a GPU runs on
    instead of waiting at every batch for its copy; at most HOLD_BYTES wait on the device."""

    HOLD_BYTES = 256 * 2**20

    def __init__(self) -> None:
        self.held: list[torch.Tensor] = []
        self.held_bytes = 0
        self.done: list[np.ndarray] = []

    def add(self, rows: torch.Tensor) -> None:
        self.held.append(rows)
        self.held_bytes += rows.numel() * rows.element_size()
        if self.held_bytes > self.HOLD_BYTES:
            self._copy()

    def _copy(self) -> None:
        if self.held:
            self.done.append(torch.cat(self.held).cpu().numpy())
            self.held, self.held_bytes = [], 0

    def array(self) -> np.ndarray:
        self._copy()
        return np.concatenate(self.done)


def _draw(shape: tuple[int, ...], seed: int, index: int) -> torch.Tensor:
    """Image `index`'s standard normal draw, a function of the seed and the index alone."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(runtime.step_seed(seed, 0, int(index))))


@torch.no_grad()
def decode(
    loaded: Loaded, latents: np.ndarray, batch_size: int = 256, labels: np.ndarray | None = None
) -> Iterator[torch.Tensor]:
    """Images (B, C, S, S) in [0, 1] from latent rows, batch by batch; `labels`: a conditional
    model's class number for each row. A model with a codebook also takes rows of whole code
    numbers (what `ae encode` writes for it)."""
    loaded.require_decoder()
    latents, shape = np.asarray(latents), loaded.capabilities.latent_shape
    codes = math.prod(shape[1:])
    if loaded.capabilities.codebook and latents.ndim == 2 and latents.shape[1] == codes != math.prod(shape):
        if latents.dtype.kind == "f" and (latents == np.round(latents)).all():  # codes stored as floats elsewhere
            latents = latents.astype(np.int64)
        elif latents.dtype.kind == "f":
            raise InputError(f"rows of {codes} numbers are this model's code numbers, which are whole; these are not")
    codebook = loaded.capabilities.codebook if latents.dtype.kind in "iu" else 0  # whole numbers: codes
    if codebook:
        shape = shape[1:]
        if latents.size and (latents.min() < 0 or latents.max() >= codebook):
            low, high = latents.min(), latents.max()
            raise InputError(f"code numbers run from {low} to {high}; this model has codes 0 to {codebook - 1}")
    if latents.ndim != 2 or latents.shape[1] != math.prod(shape):
        floats_for_codes = loaded.capabilities.codebook and not codebook
        also = f", or of {codes} code numbers" if floats_for_codes else ""
        raise AecliError(
            f"latents have shape {latents.shape}; this model decodes rows of length {math.prod(shape)}{also}"
        )
    for start in range(0, len(latents), batch_size):
        rows = np.ascontiguousarray(latents[start : start + batch_size])
        classes = None if labels is None else torch.as_tensor(np.asarray(labels)[start : start + batch_size])
        with runtime.autocast(loaded.device):
            if codebook:
                codes = torch.as_tensor(rows.astype(np.int64)).view(-1, *shape).to(loaded.device)
                yield loaded.model.decode_codes(codes).float().cpu()
            else:
                z = torch.as_tensor(rows, dtype=torch.float32).view(-1, *shape)
                yield loaded.model.decode(z.to(loaded.device), classes).float().cpu()


@dataclass
class Denoised:
    """One input's result: its position, the (optionally noised) input and the model's output."""

    index: int
    noisy: torch.Tensor  # (C, H, W) what went into the model
    clean: torch.Tensor  # (C, H, W) the model's estimate, the input's size (the model's, less padding, with whole)


def add_noise(
    x: torch.Tensor, sigma: float, seed: int, index: int, kind: str = "gaussian", gain: float = 30.0
) -> torch.Tensor:
    """Noise of a kind `ae train --noise` knows (gaussian: std sigma), clipped to [0, 1]; seeded
    per image, so batching never changes it."""
    from aecli.models.objectives.denoise import corrupt

    generator = torch.Generator().manual_seed(runtime.step_seed(seed, 0, index))
    return corrupt(x, kind, sigma, gain, generator)


@torch.no_grad()
def denoise(
    loaded: Loaded, images: ImageSet, *, noise: float = 0.0, noise_kind: str = "gaussian", gain: float = 30.0,
    seed: int = 0, whole: bool = False, overlap: float = 0.5, tta: bool = False, batch_size: int = 64,
    workers: int | None = None, strict: bool = True, progress: Progress | None = None,
) -> Iterator[Denoised]:  # fmt: skip
    """Each image through the model at its own size: model-sized images in batches, others whole
    (a fully convolutional model) or in tiles.

    Colour images go through a 1-channel model channel by channel; grey ones through a 3-channel
    model as grey RGB. With whole=True, each image is fitted to the model's size as it was trained
    (its `resize`) instead of tiled; padding is cut away again, so the result keeps the aspect ratio.
    Noise of `noise_kind` is added first where `noise` > 0, or always for the photon kinds (at `gain`).
    With tta, every pass is the mean over the eight flips and quarter turns (symmetries.averaged).
    """
    from aecli.models.objectives.denoise import PHOTON_KINDS
    from aecli.models.symmetries import averaged

    cfg = loaded.config
    net = functools.partial(averaged, loaded) if tta else loaded
    for batch in batches(
        loaded, images, batch_size=batch_size, workers=workers, strict=strict, progress=progress, native=True
    ):
        if not len(batch.index):
            continue
        inputs, shapes = [], []
        for x, i in zip(batch.pixels, batch.index.tolist()):
            shapes.append(tuple(x.shape[-2:]))
            x = to_size(x, cfg.image_size, cfg.resize) if whole else x
            noisy = noise > 0 or noise_kind in PHOTON_KINDS
            inputs.append(add_noise(x, noise, seed, i, noise_kind, gain) if noisy else x)
        fitted = [_fit_channels(x, cfg.channels) for x in inputs]
        direct = [n for n, f in enumerate(fitted) if f.shape[-2:] == (cfg.image_size, cfg.image_size)]
        outputs: dict[int, torch.Tensor] = {}
        if direct:  # model-sized images share forward passes
            stacked = torch.cat([fitted[n] for n in direct])
            results = torch.cat([net(stacked[s : s + batch_size]) for s in range(0, len(stacked), batch_size)])
            offsets = np.cumsum([0] + [len(fitted[n]) for n in direct])
            for k, n in enumerate(direct):
                outputs[n] = results[offsets[k] : offsets[k + 1]]
        for n, f in enumerate(fitted):
            if n in outputs:
                continue
            if loaded.capabilities.any_size:  # fully convolutional: the whole image at once
                outputs[n] = net(f)
            else:
                tiles = [apply_tiled(net, piece, cfg.image_size, overlap, batch_size) for piece in f]
                outputs[n] = torch.stack(tiles)
        for n, (x, i) in enumerate(zip(inputs, batch.index.tolist())):
            clean = _unfit_channels(outputs[n], x.shape[0])
            if whole:
                x, clean = (_unpadded(t, shapes[n], cfg.image_size, cfg.resize) for t in (x, clean))
            yield Denoised(i, x, clean)


def _unpadded(y: torch.Tensor, shape: tuple[int, int], size: int, mode: str) -> torch.Tensor:
    """A model-sized result of an image fitted by padding, without the padding: the aspect kept."""
    if mode != "pad" or tuple(shape) == (size, size):
        return y
    (h, w), top, left = layout(*shape, size, mode)
    return y[..., top : top + h, left : left + w]


def _fit_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) to a batch the model takes: (1, channels, H, W), or (C, 1, H, W) channel by channel."""
    if x.shape[0] == channels:
        return x[None]
    if channels == 1:
        return x[:, None]
    return to_channels(x, channels)[None]


def _unfit_channels(y: torch.Tensor, channels: int) -> torch.Tensor:
    """The model's output batch back to one (channels, H, W) image."""
    if y.shape[0] == 1 and y.shape[1] == channels:
        return y[0]
    if y.shape[1] == 1:
        return y[:, 0]
    return y[0].mean(0, keepdim=True)  # a grey image went through a colour model


DRAW_BATCH = 1024  # latents a learnt prior draws at once: its memory stays bounded, its results fixed


@torch.no_grad()
def sample(
    loaded: Loaded, n: int, *, temperature: float = 1.0, seed: int = 0, sampler: samplers.Sampler | None = None,
    label: str | list[str] | None = None,
) -> tuple[torch.Tensor, str]:
    """n images decoded from latents drawn with `seed`; and where they were drawn from.

    `normal` takes z = mean + temperature·L·ε, ε ~ N(0, I), from the model's prior or fitted
    Gaussian; `gmm` from one component of the stored mixture per image, picked by its weight
    (samplers.py); `prior`, from the prior the model learnt in training (a VQ-VAE's code prior, its
    logits over temperature). Unless told, the learnt prior where there is one, else normal. A
    conditional model draws images of the class named `label`, which it needs (capabilities.classes);
    given several names (or "all": every class), n of each, class after class, from the same n
    latents, so each class shows the same draws."""
    loaded.require_decoder()
    numbers = loaded.class_numbers(label) if isinstance(label, list) else [loaded.class_number(label)]
    learnt = loaded.model.objective.learnt_prior
    sampler = sampler or samplers.default(learnt)
    generator = torch.Generator().manual_seed(seed)
    if sampler.name == "prior":
        if not learnt:
            raise UsageError(f"--sampler prior: {loaded.file.path} learnt no prior in training; use normal or gmm")
        with runtime.autocast(loaded.device):
            z = torch.cat([loaded.model.draw(len(rows), generator, temperature).float().cpu()
                           for rows in np.array_split(np.arange(n), -(-n // DRAW_BATCH))])  # fmt: skip
        return torch.cat(list(decode(loaded, z.flatten(1).numpy()))), "the prior over codes it learnt in training"
    stats = loaded.file.latent_stats
    try:
        if sampler.name == "gmm":
            mixture = samplers.mixture_of(stats, sampler)
            size = len(mixture["means"][0])
        else:
            mean, factor, source = loaded.model.prior(stats)
            size = len(mean)
    except AecliError as e:
        raise type(e)(f"{loaded.file.path}: {e}") from None
    eps = torch.randn(n, size, generator=generator, dtype=torch.float64)
    if sampler.name == "gmm":
        picks = torch.rand(n, generator=generator, dtype=torch.float64)
        z = torch.as_tensor(samplers.mixture_draw(mixture, eps.numpy(), picks.numpy(), temperature))
        source = f"a {mixture['k']}-component Gaussian mixture fitted to {mixture['n']} {stats['split']} latents"
    else:
        z = torch.as_tensor(mean) + temperature * eps @ torch.as_tensor(factor).T
    if numbers == [None]:
        return torch.cat(list(decode(loaded, z.float().numpy()))), source
    names = [loaded.capabilities.classes[k] for k in numbers]
    images = [torch.cat(list(decode(loaded, z.float().numpy(), labels=np.full(n, k)))) for k in numbers]
    return torch.cat(images), source + f", class{'es' if len(names) > 1 else ''} {', '.join(names)}"


def one_image(spec: str) -> torch.Tensor:
    """The one image an input names (a file, or an array of one), at its own size."""
    from aecli.data import open_inputs

    images = open_inputs([spec])
    if len(images) != 1:
        raise UsageError(f"{spec} holds {len(images)} images; --interpolate takes one image at each end")
    batch = images.load(np.array([0]), None, None)
    if batch.error or not batch.pixels:
        raise InputError(batch.error or f"{spec}: cannot read the image")
    return batch.pixels[0]


@torch.no_grad()
def interpolate(loaded: Loaded, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Decoded points on the straight line between the latents of images a and b, ends included."""
    loaded.require_decoder()
    cfg = loaded.config
    pair = torch.stack([to_size(to_channels(x, cfg.channels), cfg.image_size, cfg.resize) for x in (a, b)])
    with runtime.autocast(loaded.device):
        za, zb = loaded.model.encode(pair.to(loaded.device)).float().flatten(1).cpu()
    t = torch.linspace(0, 1, steps)[:, None]
    return torch.cat(list(decode(loaded, ((1 - t) * za + t * zb).numpy())))


class References:
    """Clean references for evaluation: files below a directory matched by relative path
    (any image suffix), or another input set (a dataset, an array) matched by position."""

    def __init__(self, spec: str, images: ImageSet):
        from aecli.data import open_inputs

        self.spec, self.images = spec, images
        self.root = Path(spec).expanduser() if Path(spec).expanduser().is_dir() else None
        self.others = None if self.root else open_inputs([spec])
        if self.others is not None and len(self.others) != len(images):
            raise InputError(f"--reference {spec} holds {len(self.others)} images, the inputs {len(images)}")

    def get(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """Image i's reference as the output `like` is: same channels; the same size, or an error."""
        if self.others is not None:
            ref = self.others.load(np.array([i]), None, None).pixels
            if not ref:
                raise InputError(f"--reference {self.spec}: cannot read its image #{i}")
            ref, name = ref[0], self.others.name(i)
        else:
            name = self._find(i)
            ref = read_image(name)
            ref = ref[: ref.shape[0] - 1] if ref.shape[0] in (2, 4) else ref
        ref = to_channels(ref, like.shape[0])
        if ref.shape[-2:] != like.shape[-2:]:
            h, w = ref.shape[-2:]
            raise InputError(
                f"reference {name} is {w}x{h}, the output for {self.images.name(i)} {like.shape[-1]}x{like.shape[-2]}"
            )
        return ref

    def files(self) -> Iterator[Path]:
        """The reference files the inputs are matched with: what no output may replace."""
        if self.others is not None:
            yield from self.others.files()
            return
        for i in range(len(self.images)):
            with contextlib.suppress(InputError):  # a missing one is reported when it is needed
                yield self._find(i)

    def _find(self, i: int) -> Path:
        rel = self.images.relative(i)
        for candidate in [rel, *(rel.with_suffix(s) for s in sorted(IMAGE_SUFFIXES))]:
            if (self.root / candidate).is_file():
                return self.root / candidate
        raise InputError(
            f"no reference for {self.images.name(i)} in {self.root} (looked for {rel} with any image suffix)"
        )
