"""The `ae` command line: options in, one library call, results out.

Library errors (AecliError) become one `Error: ...` line on stderr and their exit code;
anything else too, unless `--debug` asks for the traceback. Torch is imported inside commands
only, so `ae --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli import __version__
from aecli.errors import AecliError, InputError, UsageError

app = typer.Typer(
    name="ae",
    help="ae: the autoencoder workbench for the shell. Train, encode, denoise, sample and score images.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,  # plain help and click's plain usage errors: readable when piped
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
_state = {"debug": bool(os.environ.get("AE_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ae {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug


def command(*args, **kwargs):
    """app.command, with library errors turned into one line on stderr and an exit code."""

    def register(fn):
        @functools.wraps(fn)
        def run(*a, **k):
            try:
                result = fn(*a, **k)
                sys.stdout.flush()  # a full disk or a closed pipe shows here, not at exit
                return result
            except AecliError as e:
                _fail(e, str(e), e.exit_code)
            except KeyboardInterrupt as e:
                _fail(e, "interrupted", 130)
            except BrokenPipeError:  # the reader went away (`ae encode ... | head`): stop quietly, as SIGPIPE would
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(141) from None
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except OSError as e:  # one the library did not expect: most often stdout on a full disk
                where = f"{e.filename}" if e.filename else "cannot write to standard output"
                _fail(e, f"{where}: {e.strerror or e}", 1)
            except Exception as e:  # a bug: still one line, with the way to see more
                _fail(e, f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)

        app.command(*args, **kwargs)(run)
        return fn

    return register


def _fail(error: BaseException, message: str, code: int) -> None:
    if _state["debug"]:
        raise error
    from aecli.ui import err

    err.print(f"Error: {message}", markup=False, style="red", soft_wrap=True)
    raise typer.Exit(code)


Inputs = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Image files, directories, globs, .npy/.npz, IDX files, or a dataset: sample, fashion-mnist[:test].",
        metavar="INPUTS",
        show_default=False,
    ),
]
FilesFrom = Annotated[
    Optional[str], typer.Option("--files-from", help="Read more inputs, one per line, from FILE (- for stdin).")
]
Device = Annotated[
    Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps (default: $AE_DEVICE, else auto).")
]
Workers = Annotated[
    Optional[int],
    typer.Option(
        "--workers",
        help="Loader processes decoding images (default: 0 for arrays or on 2 cores or fewer, else up to 4).",
    ),
]
SkipBad = Annotated[
    bool, typer.Option("--skip-bad", help="Skip unreadable images with a warning each (and a count) instead of stopping.")
]
MaxPixels = Annotated[
    Optional[int],
    typer.Option(
        "--max-pixels", min=1, help="Refuse images with more pixels than this, before decoding them.",
        show_default="100000000",
    ),
]  # fmt: skip
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No progress or messages on stderr; errors still show.")]


@command()
def train(
    inputs: Inputs = None,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Model file to write (default: VARIANT.safetensors).")
    ] = None,
    variant: Annotated[Optional[str], typer.Option(help="ae, denoising or vae.", show_default="ae")] = None,
    arch: Annotated[
        Optional[str],
        typer.Option(
            help="conv (a true bottleneck) or unet (skip connections; keeps detail).",
            show_default="unet for denoising, else conv",
        ),
    ] = None,
    latent_dim: Annotated[
        Optional[int], typer.Option(help="Length of each image's latent vector.", show_default="32")
    ] = None,
    sigma: Annotated[Optional[float], typer.Option(help="denoising: noise strength.", show_default="0.2")] = None,
    noise: Annotated[
        Optional[str], typer.Option(help="denoising: gaussian, salt-pepper, mask or mixed.", show_default="gaussian")
    ] = None,
    beta: Annotated[Optional[float], typer.Option(help="vae: weight of the KL term.", show_default="1.0")] = None,
    loss: Annotated[Optional[str], typer.Option(help="Pixel loss: mse or bce.", show_default="mse")] = None,
    epochs: Annotated[
        Optional[int], typer.Option(help="Passes over the training images.", show_default="10; 20 for denoising")
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(help="Images per step.", show_default="128; 32 for denoising")
    ] = None,
    lr: Annotated[
        Optional[float], typer.Option(help="Adam's peak learning rate.", show_default="0.001; 0.002 for denoising")
    ] = None,
    lr_schedule: Annotated[
        Optional[str], typer.Option(help="cosine (5% warm-up, decay to 0) or constant.", show_default="cosine")
    ] = None,
    val_split: Annotated[
        Optional[float], typer.Option(help="Fraction held out for validation and calibration.", show_default="0.1")
    ] = None,
    patch_size: Annotated[
        Optional[int], typer.Option(help="Train on random crops of this size (the model's size), e.g. for photos.")
    ] = None,
    patches_per_image: Annotated[
        Optional[int], typer.Option(help="With --patch-size: crops per image per epoch.", show_default="16")
    ] = None,
    image_size: Annotated[
        Optional[int], typer.Option(help="Model input size (square); others are resized.", show_default="first image's")
    ] = None,
    channels: Annotated[
        Optional[int], typer.Option(help="1 (grey) or 3 (colour).", show_default="first image's")
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option(help="Seed for split, shuffle and noise: same seed, same model on CPU.", show_default="0"),
    ] = None,
    device: Device = None,
    workers: Workers = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", exists=True, dir_okay=False, help="YAML file of these settings; flags override it."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run saved in --out (same settings, same result).")
    ] = False,
    preview: Annotated[
        Optional[Path], typer.Option("--preview", help="PNG grid of validation inputs and reconstructions.")
    ] = None,
    plot: Annotated[
        bool,
        typer.Option("--plot", help="Also draw train and validation loss per epoch to MODEL.loss.png (matplotlib)."),
    ] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved settings as YAML and exit.")
    ] = False,
    files_from: FilesFrom = None,
    no_resize: Annotated[
        bool, typer.Option("--no-resize", help="Reject images of another size instead of resizing.")
    ] = False,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Train an autoencoder on images and save it as one .safetensors file.

    The file is rewritten after every epoch, so Ctrl-C (exit 130) or a crash keeps the work
    done so far; --resume continues it.

    \b
    Examples:
      ae train sample --variant denoising --sigma 0.2 -o dae.safetensors
      ae train ./photos/normal --variant vae --latent-dim 16 --epochs 20 -o vae.safetensors
      ae train fashion-mnist --config examples/fashion-ae.yaml -o ae.safetensors
      ae train ./photos --variant denoising --patch-size 32 --patches-per-image 64 -o photo-dae.safetensors
    """
    from aecli.config import load_settings, to_yaml

    overrides = dict(
        variant=variant, arch=arch, latent_dim=latent_dim, sigma=sigma, noise=noise, beta=beta, loss=loss,
        epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, val_split=val_split, image_size=image_size,
        patch_size=patch_size, patches_per_image=patches_per_image,
        channels=channels, seed=seed, device=device, workers=workers,
        resize=False if no_resize else None, skip_bad=True if skip_bad else None,
    )  # fmt: skip
    settings = load_settings(config, overrides)
    if print_config:
        sys.stdout.write(to_yaml(settings))
        return
    from aecli import train as training
    from aecli.data import open_inputs
    from aecli.distributed import leader
    from aecli.io.files import check_writable
    from aecli.io.modelfile import check_replaceable, load
    from aecli.ui import Messages, TrainProgress

    say = Messages(quiet or not leader())  # under torchrun, rank 0 talks for all
    out = out or Path(f"{settings.model.variant}.safetensors")
    loss_png = None
    if plot:
        from aecli.report import plots

        plots.check_available()
        loss_png = plots.loss_plot_path(out)
    previous = None
    if resume:
        previous = load(out, with_optimizer=True)
        settings = training.resume_settings(previous, overrides)
    else:
        check_replaceable(out)
    check_writable(out)
    for target in filter(None, [preview, loss_png]):
        check_writable(target)
    images = open_inputs(inputs or [], files_from, max_pixels, settings.train.skip_bad)
    if images.non_images:
        say.info(f"skipped {images.non_images} non-image file(s)")
    stop = threading.Event()
    started = time.perf_counter()
    with TrainProgress(say) as progress, _stop_on_sigint(stop):
        result = training.fit(images, settings, out, resume=previous, callbacks=progress, stop=stop, preview=preview)
    seconds = time.perf_counter() - started
    if not leader():
        return
    summary = result.training
    say.info(
        f"trained {result.config.variant} ({result.config.arch}, {result.config.image_size}x{result.config.image_size}x"
        f"{result.config.channels}, latent {result.config.latent_dim}) on {summary['data']['train']} images, "
        f"{summary['epochs']} epochs in {seconds:.1f} s; train loss {summary['train_loss'][-1]:.5g}"
        + (f", val {summary['val_loss'][-1]:.5g}" if summary["val_loss"] else "")
    )
    if summary.get("skipped_images"):
        say.warn(f"{summary['skipped_images']} unreadable image(s) skipped")
    if preview:
        say.info(f"preview: {preview}")
    if loss_png:
        plots.loss_curves(summary, loss_png, title=f"{out.name}: loss per epoch")
        say.info(f"loss curves: {loss_png}")
    say.info(f"model: {out}")


class _stop_on_sigint:
    """The first Ctrl-C asks fit() to save and stop after the current step; a second one aborts."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; Ctrl-C then aborts as usual
        self.previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.stop.is_set():
                raise KeyboardInterrupt
            self.stop.set()

        signal.signal(signal.SIGINT, handler)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


ModelPath = Annotated[Path, typer.Option("-m", "--model", help="A model file made by `ae train`.", show_default=False)]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
Grid = Annotated[
    Optional[Path], typer.Option("--grid", help="Also write one PNG grid of the results, for a quick look.")
]
Nrow = Annotated[int, typer.Option("--nrow", min=1, help="Images per row in --grid.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random draw: same seed, same output.")]


def _outputs(*paths: Optional[Path]) -> None:
    from aecli.io.files import check_writable

    for path in filter(None, paths):
        check_writable(path)


def _output_dirs(*paths: Optional[Path]) -> None:
    from aecli.io.files import check_directory

    for path in filter(None, paths):
        check_directory(path)


@command()
def encode(
    inputs: Inputs = None,
    model: ModelPath = ...,
    out: Annotated[
        Optional[str],
        typer.Option("-o", "--out", help="File to write; - or absent: stdout (when it is not a terminal)."),
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format", help="npy, npz (latents and paths), csv or jsonl.", show_default="from -o's suffix, else npy"
        ),
    ] = None,
    index: Annotated[
        Optional[Path], typer.Option("--index", help="Also write each row's source, one per line.")
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option("--plot", help="Also draw a 2-D map of the latents to this PNG, coloured by class if labelled."),
    ] = None,
    projection: Annotated[
        Optional[str],
        typer.Option(
            "--projection", help="--plot: pca, tsne (needs scikit-learn) or umap (needs umap-learn).", show_default="pca"
        ),
    ] = None,
    sample: Annotated[bool, typer.Option("--sample", help="vae: draw from q(z|x) instead of taking its mean.")] = False,
    seed: Seed = 0,
    batch_size: BatchSize = 256,
    device: Device = None,
    workers: Workers = None,
    files_from: FilesFrom = None,
    no_resize: Annotated[
        bool, typer.Option("--no-resize", help="Reject images of another size instead of resizing.")
    ] = False,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Write one latent vector (float32 row) per image, in input order.

    \b
    Examples:
      ae encode ./images -m ae.safetensors > latents.npy
      ae encode ./images -m ae.safetensors -o latents.npy --index paths.txt
      ae encode ./images -m vae.safetensors --format npz -o z.npz
      ae encode sample:test -m ae.safetensors -o z.npy --plot map.png --projection tsne
    """
    from aecli import infer
    from aecli.io import latents
    from aecli.data import open_inputs
    from aecli.distributed import leader
    from aecli.ui import Messages, StreamProgress

    say = Messages(quiet or not leader())  # under torchrun, rank 0 talks and writes for all
    target = None if out in (None, "-") else Path(out)
    fmt = latents.choose_format(target, fmt)
    latents.check_destination(target, fmt)
    if projection and not plot:
        raise UsageError("--projection needs --plot FILE")
    if plot:
        from aecli.report import plots

        plots.check_available(projection or "pca")
    _outputs(target, index, plot)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    loaded = infer.load_model(model, device)
    with StreamProgress(say, "encode", images.refused) as progress:
        result = infer.encode(
            loaded, images, batch_size=batch_size, workers=workers, sample=sample, seed=seed,
            resize=not no_resize, strict=not skip_bad, progress=progress,
        )  # fmt: skip
    if not leader():
        return
    latents.write(result.vectors, result.sources, target, fmt)
    if index:
        latents.write_index(index, result.sources)
    if plot:
        labels, names = plots.dataset_labels(images, result.index)
        plots.latent_map(result.vectors, labels, plot, projection=projection or "pca", class_names=names, seed=seed)
        say.info(f"latent map: {plot}")
    say.info(
        f"encoded {len(result.vectors)} images to {target or 'stdout'} ({fmt}, {result.vectors.shape[1]} floats each)"
    )


@command()
def decode(
    latents_file: Annotated[
        str, typer.Argument(metavar="LATENTS", help="A .npy/.npz file of latent rows (from ae encode), or - for stdin.")
    ],
    model: ModelPath = ...,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Directory for one PNG per row (000000.png, ...).")
    ] = None,
    grid: Grid = None,
    nrow: Nrow = 8,
    batch_size: BatchSize = 256,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Turn latent vectors back into images (models trained with --arch conv).

    \b
    Examples:
      ae decode latents.npy -m ae.safetensors -o recon/ --grid recon.png
      ae encode ./images -m ae.safetensors | ae decode - -m ae.safetensors --grid recon.png
    """
    from aecli import infer
    from aecli.io import latents
    from aecli.io.pictures import GRID_LIMIT, save_grid, save_png
    from aecli.ui import Messages

    say = Messages(quiet)
    if out is None and grid is None:
        raise UsageError("nothing to write: give -o DIR, --grid FILE, or both")
    _outputs(grid)
    _output_dirs(out)
    rows = latents.read(latents_file)
    loaded = infer.load_model(model, device)
    width = max(6, len(str(len(rows) - 1)))
    shown, done = [], 0
    for batch in infer.decode(loaded, rows, batch_size):
        for image in batch:
            if out is not None:
                save_png(out / f"{done:0{width}d}.png", image)
            if len(shown) < GRID_LIMIT:
                shown.append(image)
            done += 1
    if grid:
        save_grid(grid, shown, nrow)
    say.info(f"decoded {done} images" + (f" to {out}/" if out else "") + (f"; grid: {grid}" if grid else ""))


@command()
def denoise(
    inputs: Inputs = None,
    model: ModelPath = ...,
    out: Annotated[
        Optional[Path],
        typer.Option("-o", "--out", help="Directory for the denoised PNGs, mirroring inputs' relative paths."),
    ] = None,
    add_noise: Annotated[
        float,
        typer.Option(
            "--add-noise", min=0, help="Corrupt inputs with Gaussian noise of this std first (pixels in [0, 1])."
        ),
    ] = 0.0,
    save_noisy: Annotated[
        Optional[Path], typer.Option("--save-noisy", help="Directory for the noisy copies made by --add-noise.")
    ] = None,
    reference: Annotated[
        Optional[str],
        typer.Option(
            "--reference",
            help="Clean images (a directory matched by relative path, or a dataset/array by position): print PSNR and SSIM.",
        ),
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option("--report", help="CSV of PSNR and SSIM per image (needs --reference).")
    ] = None,
    resize: Annotated[
        bool, typer.Option("--resize", help="Resize images to the model's size instead of tiling them.")
    ] = False,
    overlap: Annotated[
        float, typer.Option("--overlap", min=0, max=0.9, help="Overlap of neighbouring tiles, as a fraction of a tile.")
    ] = 0.5,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow writing into an input directory or over inputs.")
    ] = False,
    grid: Grid = None,
    nrow: Nrow = 8,
    seed: Seed = 0,
    batch_size: BatchSize = 64,
    device: Device = None,
    workers: Workers = None,
    files_from: FilesFrom = None,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Denoise images of any size (larger than the model: in blended tiles).

    \b
    Examples:
      ae denoise ./noisy -m dae.safetensors -o ./clean
      ae denoise photo.jpg -m dae.safetensors -o out/
      ae denoise ./clean -m dae.safetensors --add-noise 0.2 --reference ./clean -o out/
    """
    from aecli import distributed, infer
    from aecli.data import open_inputs
    from aecli.io.files import atomic_output
    from aecli.infer.restore import denoise_to_files, plan_outputs
    from aecli.ui import Messages, StreamProgress, print_quality

    say = Messages(quiet or not distributed.leader())  # under torchrun, rank 0 talks for all
    if out is None and reference is None and grid is None and save_noisy is None:
        raise UsageError("nothing to write: give -o DIR (or --reference to only measure, --grid or --save-noisy)")
    if report and not reference:
        raise UsageError("--report needs --reference")
    if save_noisy and not add_noise:
        raise UsageError("--save-noisy needs --add-noise")
    _outputs(report, grid)
    _output_dirs(out, save_noisy)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    targets = plan_outputs(images, out, save_noisy, overwrite)
    loaded = infer.load_model(model, device)
    if loaded.config.variant != "denoising":
        say.warn(
            f"{model} (variant {loaded.config.variant}) was not trained to denoise: its output is a reconstruction"
        )
    references = infer.References(reference, images) if reference else None
    with StreamProgress(say, "denoise", images.refused) as progress:
        done = denoise_to_files(
            loaded, images, targets, references, keep=nrow, noise=add_noise, seed=seed, resize=resize,
            overlap=overlap, batch_size=batch_size, workers=workers, strict=not skip_bad, progress=progress,
        )  # fmt: skip
    if not distributed.leader():  # under torchrun, rank 0 writes the shared outputs
        return
    if grid and done.shown:
        from aecli.io.pictures import save_rows

        save_rows(grid, [list(row) for row in zip(*done.shown)])
    if report:
        with atomic_output(report) as f:
            f.write(done.quality.csv().encode())
    if references:
        print_quality(done.quality.summary(), len(done.quality.rows), add_noise)
    say.info(f"denoised {done.count} images" + (f" to {out}/" if out else "") + (f"; grid: {grid}" if grid else ""))


@command()
def sample(
    model: ModelPath = ...,
    n: Annotated[int, typer.Option("-n", "--count", min=1, help="How many images to draw.")] = 64,
    temperature: Annotated[
        float,
        typer.Option("--temperature", min=0, help="Scale of the latent draw: below 1 is safer, above 1 more varied."),
    ] = 1.0,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Directory for one PNG per image.")] = None,
    grid: Grid = None,
    nrow: Nrow = 8,
    interpolate: Annotated[
        Optional[tuple[str, str]],
        typer.Option(
            "--interpolate",
            metavar="A B",
            help="Decode the straight line between the latents of images A and B instead.",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=2, help="--interpolate: images along the line, ends included.")
    ] = 8,
    seed: Seed = 0,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Draw new images: from a VAE's prior, or from a plain model's latent Gaussian.

    \b
    Examples:
      ae sample -m vae.safetensors -n 64 -o samples/ --grid samples.png --seed 1
      ae sample -m ae.safetensors --interpolate a.png b.png --steps 8 --grid walk.png
    """
    from aecli import infer
    from aecli.io.pictures import save_grid, save_png
    from aecli.ui import Messages

    say = Messages(quiet)
    if out is None and grid is None:
        raise UsageError("nothing to write: give -o DIR, --grid FILE, or both")
    _outputs(grid)
    _output_dirs(out)
    loaded = infer.load_model(model, device)
    if interpolate:
        a, b = (infer.first_image(spec) for spec in interpolate)
        images = infer.interpolate(loaded, a, b, steps)
        what = f"{steps} steps from {interpolate[0]} to {interpolate[1]}"
    else:
        images, source = infer.sample(loaded, n, temperature=temperature, seed=seed)
        what = f"{n} samples from {source}"
    width = max(6, len(str(len(images) - 1)))
    if out is not None:
        for i, image in enumerate(images):
            save_png(out / f"{i:0{width}d}.png", image)
    if grid:
        save_grid(grid, images, nrow)
    say.info(f"drew {what}" + (f" to {out}/" if out else "") + (f"; grid: {grid}" if grid else ""))


@command()
def score(
    inputs: Inputs = None,
    model: ModelPath = ...,
    metric: Annotated[
        Optional[str],
        typer.Option(
            "--metric",
            help="combined (mse and latent distance), mse, mae, bce, ssim, latent, or elbo (VAE). See docs/thresholds.md.",
            show_default="combined; mse for model files without latent statistics",
        ),
    ] = None,
    threshold: Annotated[
        str, typer.Option("--threshold", help="auto (model calibration at --fpr), a number, or a percentile like p95.")
    ] = "auto",
    fpr: Annotated[float, typer.Option("--fpr", help="auto: false-positive rate on normal images.")] = 0.01,
    contamination: Annotated[
        Optional[float], typer.Option("--contamination", help="Flag this fraction of the scored set, the highest.")
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option("--format", help="table, csv, jsonl or json.", show_default="table on a terminal, else csv"),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Write the scores to FILE instead of stdout.")
    ] = None,
    top: Annotated[Optional[int], typer.Option("--top", min=1, help="List only the K highest scores.")] = None,
    fail_on_anomaly: Annotated[
        bool, typer.Option("--fail-on-anomaly", help="Exit 3 when any image is flagged (for cron and CI).")
    ] = False,
    maps: Annotated[
        Optional[Path],
        typer.Option("--maps", help="Directory for heatmaps of flagged images (among the --top K, if given)."),
    ] = None,
    maps_all: Annotated[
        bool, typer.Option("--maps-all", help="With --maps: a heatmap for every (listed) image.")
    ] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option("--plot", help="Also draw a histogram of the scores and the threshold to this PNG (matplotlib)."),
    ] = None,
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels", help="Evaluate: folders (good/ or normal/ is normal), class=K (dataset labels), or FILE.csv."
        ),
    ] = None,
    batch_size: BatchSize = 256,
    device: Device = None,
    workers: Workers = None,
    files_from: FilesFrom = None,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Score images for anomaly (higher: more anomalous) and flag those above a threshold.

    Exit status: 0, or 3 with --fail-on-anomaly when anything is flagged.

    \b
    Examples:
      ae score ./incoming -m ae.safetensors
      ae score ./incoming -m ae.safetensors --format jsonl > scores.jsonl
      ae score ./test -m ae.safetensors --labels folders --maps maps/ --plot scores.png
      ae score ./incoming -m ae.safetensors --contamination 0.05 --fail-on-anomaly
    """
    from aecli import infer
    from aecli.scoring import thresholds
    from aecli.data import open_inputs
    from aecli.distributed import leader, total
    from aecli.io.files import atomic_output
    from aecli.scoring.scores import assess
    from aecli.io.tabular import records_text
    from aecli.ui import Messages, StreamProgress, print_evaluation, print_table, score_table

    say = Messages(quiet or not leader())  # under torchrun, rank 0 talks and writes for all
    spec = thresholds.parse(threshold)
    fmt = fmt or ("table" if out is None and sys.stdout.isatty() else "csv")
    if fmt not in ("table", "csv", "jsonl", "json"):
        raise UsageError(f"unknown format '{fmt}' (use table, csv, jsonl or json)")
    if maps_all and not maps:
        raise UsageError("--maps-all needs --maps DIR")
    if plot:
        from aecli.report.plots import check_available, score_histogram

        check_available()
    _outputs(out, plot)
    _output_dirs(maps)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    truth = None
    if labels:
        from aecli.scoring.labels import labels_for

        truth = labels_for(images, labels)
    loaded = infer.load_model(model, device)
    if loaded.config.arch == "unet":
        say.warn(f"{model} is a unet: its skip connections reconstruct anomalies too; --arch conv models score better")
    options = dict(batch_size=batch_size, workers=workers, strict=not skip_bad)
    with StreamProgress(say, "score", images.refused) as progress:
        result = assess(
            loaded, images, metric=metric, threshold=spec, fpr=fpr, contamination=contamination, labels=truth,
            progress=progress, **options,
        )  # fmt: skip
    records, text = result.records(top), "csv" if fmt == "table" else fmt
    if leader():  # under torchrun, rank 0 writes for all
        if fmt == "table" and out is None:
            print_table(score_table(records))
        elif out is None:
            sys.stdout.writelines(records_text(records, text))
        else:
            with atomic_output(out) as f:
                for line in records_text(records, text):
                    f.write(line.encode())
    n, flagged = len(result.flagged), int(result.flagged.sum())
    say.info(f"{result.metric} threshold {result.threshold.value:.6g} ({result.threshold.how})")
    say.info(f"flagged {flagged} of {n} images ({flagged / max(n, 1):.1%})")
    if result.evaluation is not None and leader():
        print_evaluation(result.evaluation, result.threshold.value)
    if maps:
        from aecli.scoring.maps import write_maps

        written = total(write_maps(loaded, images, result.map_rows(top, maps_all), maps, **options))
        say.info(f"heatmaps: {written} in {maps}/")
    if plot and leader():
        auroc = result.evaluation.auroc if result.evaluation is not None else None
        score_histogram(result.scores.of(result.metric), result.threshold, plot, result.labels, result.metric, auroc)
        say.info(f"histogram: {plot}")
    if fail_on_anomaly and flagged:
        raise typer.Exit(3)


@command()
def calibrate(
    inputs: Inputs = None,
    model: ModelPath = ...,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Write a calibrated copy here instead of updating MODEL.")
    ] = None,
    batch_size: BatchSize = 256,
    device: Device = None,
    workers: Workers = None,
    files_from: FilesFrom = None,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Refit a model's auto threshold on known-normal images, without retraining.

    The model file's calibration (every metric's score distribution) is replaced atomically.

    \b
    Examples:
      ae calibrate ./known_good -m ae.safetensors
      ae calibrate ./known_good -m ae.safetensors -o ae-site2.safetensors
    """
    from aecli import infer
    from aecli.io import modelfile
    from aecli.data import open_inputs
    from aecli.distributed import leader
    from aecli.scoring.scores import calibrate_from, score
    from aecli.ui import Messages, StreamProgress

    say = Messages(quiet or not leader())
    if out is not None:
        modelfile.check_replaceable(out)
    _outputs(out or model)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    loaded = infer.load_model(model, device)
    with StreamProgress(say, "calibrate", images.refused) as progress:
        scores = score(loaded, images, batch_size=batch_size, workers=workers, strict=not skip_bad, progress=progress)
    if len(scores.index) < 2:
        raise InputError(f"calibration needs at least 2 readable images, got {len(scores.index)}")
    record = {**calibrate_from(scores.values, "calibration"), "source": images.description}
    if not leader():  # under torchrun, rank 0 writes what every process scored
        return
    modelfile.replace_calibration(model, record, out)
    p99 = record["metrics"]["mse"]["p99"]
    say.info(f"calibrated {out or model} on {len(scores.index)} images ({images.description}); mse p99 {p99:.6g}")


@command()
def info(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file made by `ae train`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Everything as JSON, for machines.")] = False,
) -> None:
    """Show what a model file holds: variant, config, training summary, calibration.

    \b
    Examples:
      ae info dae.safetensors
      ae info dae.safetensors --json | jq .calibration.metrics.mse.p99
    """
    from aecli.io.modelfile import describe
    from aecli.ui import model_table, print_json, print_table

    details = describe(model)
    if as_json:
        print_json(details)
    else:
        print_table(model_table(details))


@command()
def demo(
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Folder for the models, pictures and report.")
    ] = Path("demo-out"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a folder that holds other files (none is deleted).")
    ] = False,
    seed: Seed = 0,
    device: Device = None,
    quick: Annotated[bool, typer.Option("--quick", hidden=True, help="A tiny tour, for tests.")] = False,
    quiet: Quiet = False,
) -> None:
    """Tour ae on the bundled sample and write an HTML report of it.

    In about a minute it denoises, samples a VAE, maps latents and scores anomalies. Every step
    is an `ae` command: OUT/index.html (and report.md) shows each picture with the commands that
    made it, to run again inside OUT. The report's paths go to stdout.

    \b
    Examples:
      ae demo                 # then open demo-out/index.html in a browser
      ae demo -o tour --device cpu --seed 1
    """
    from aecli.report import demo as tour
    from aecli.ui import Messages

    say = Messages(quiet)
    result = tour.run(out, _run_ae, progress=say.info, device=device, seed=seed, overwrite=overwrite, quick=quick)
    say.info(f"demo finished in {result.seconds:.0f} s; open {result.index} in a browser")
    typer.echo(result.index)
    typer.echo(result.report)


def _run_ae(args: list[str]) -> int:
    """Run one `ae` command line in this process (what `ae demo` is made of); returns its exit status."""
    try:
        returned = app(args, prog_name="ae", standalone_mode=False)
    except typer.TyperException as e:  # a usage error: reported as `ae` would, into the step's output
        typer.echo(f"Error: {e.format_message()}", err=True)
        return e.exit_code
    return returned if isinstance(returned, int) else 0


def main() -> None:
    app(prog_name="ae")
