"""The `ae` command line: options in, one library call, results out.

Library errors (AecliError) become one `Error: ...` line on stderr and their exit code;
anything else too, unless `--debug` asks for the traceback. Torch is imported inside commands
only, so `ae --help` stays fast.
"""

from __future__ import annotations

import enum
import functools
import inspect
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
from aecli.models.objectives.denoise import KINDS, PHOTON_KINDS
from aecli.options import SectionedCommand, setting_options

# what `ae denoise --add-noise` can add: the kinds of ae train --noise but mixed
NoiseKind = enum.Enum("NoiseKind", [(kind, kind) for kind in (*KINDS, *PHOTON_KINDS)], type=str)

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
        min=0,
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


def _quiet_but(option: str):
    """-q for a command whose `option` asks for a measurement: that is a result, shown even so."""
    return Annotated[
        bool, typer.Option("-q", "--quiet", help=f"No progress or messages on stderr; errors, and what {option} "
                           "measures, still show."),
    ]  # fmt: skip


class _TrainCommand:
    """`ae train`'s callback: a few options of its own, then one per declared setting.

    Its signature is built from the settings each time the CLI is (Typer reads `__signature__`),
    so the options, their help and their defaults come from one declaration, and an objective
    registered later (a plug-in, a test) shows up with its settings in their own section.
    """

    __name__ = "train"
    __doc__ = """Train an autoencoder on images and save it as one .safetensors file.

    The file is rewritten after every epoch, so Ctrl-C (exit 130) or a crash keeps the work
    done so far; --resume continues it. Settings come from their defaults, then --config, then
    flags; --print-config shows the result.

    \b
    Examples:
      ae train sample --variant denoising --sigma 0.2 -o dae.safetensors
      ae train ./photos/normal --variant vae --latent-dim 16 --epochs 20 -o vae.safetensors
      ae train fashion-mnist --config examples/fashion-ae.yaml -o ae.safetensors
      ae train ./photos --variant denoising --patch-size 32 --patches-per-image 64 -o photo-dae.safetensors
    """

    @staticmethod
    def own_options() -> list[inspect.Parameter]:
        def option(name, kind, default, *decls, **kw):
            return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                     annotation=Annotated[kind, typer.Option(*decls, **kw)])  # fmt: skip

        return [
            inspect.Parameter("inputs", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Inputs),
            option("out", Optional[Path], None, "-o", "--out",
                   help="Model file to write (default: VARIANT.safetensors)."),
            option("config", Optional[Path], None, "--config", exists=True, dir_okay=False,
                   help="YAML file of the settings below; flags override it."),
            option("print_config", bool, False, "--print-config", help="Print the resolved settings as YAML and exit."),
            option("resume", bool, False, "--resume",
                   help="Continue the run saved in --out (same settings, same result)."),
            option("preview", Optional[Path], None, "--preview", help="PNG grid of validation inputs and outputs."),
            option("plot", bool, False, "--plot",
                   help="Also draw train and validation loss per epoch to MODEL.loss.png (matplotlib)."),
            option("log_dir", Optional[Path], None, "--log-dir", file_okay=False,
                   help="Write TensorBoard logs to this folder, e.g. runs/NAME: loss terms, learning rate and "
                   "images/s per step, validation loss and reconstructions per epoch, latents at the end "
                   "(pip install 'aecli[tensorboard]')."),
            option("files_from", Optional[str], None, "--files-from",
                   help="Read more inputs, one per line, from FILE (- for stdin)."),
            option("max_pixels", Optional[int], None, "--max-pixels", min=1, show_default="100000000",
                   help="Refuse images with more pixels than this, before decoding them."),
            option("quiet", bool, False, "-q", "--quiet", help="No progress or messages on stderr; errors still show."),
        ]  # fmt: skip

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.Signature([*self.own_options(), *setting_options()])

    def __call__(self, inputs=None, out=None, config=None, print_config=False, resume=False, preview=None,
                 plot=False, log_dir=None, files_from=None, max_pixels=None, quiet=False,
                 **overrides) -> None:  # fmt: skip
        from aecli.config import load_settings, to_yaml

        settings = load_settings(config, overrides)
        if print_config:
            sys.stdout.write(to_yaml(settings))
            return
        from aecli.data import open_inputs
        from aecli.train import job as training
        from aecli.ui import Messages, TrainProgress

        say = Messages(quiet)
        for name in settings.ignored:
            say.warn(f"--{name.replace('_', '-')} does not apply to --variant {settings.model.variant}: ignored")
        job = training.plan(
            settings, overrides, out, resume=resume, preview=preview, plot=plot, log_dir=log_dir, config_file=config
        )
        images = open_inputs(inputs or [], files_from, max_pixels, job.settings.train.skip_bad)
        training.check_inputs(job, images)
        if images.non_images:
            say.info(f"skipped {images.non_images} non-image file(s)")
        stop = threading.Event()
        started = time.perf_counter()
        with TrainProgress(say) as progress, _stop_on_sigint(stop):
            result = training.run(job, images, progress, stop)
        say.info(training.summary(result, time.perf_counter() - started))
        for caveat in training.caveats(result):
            say.warn(caveat)
        if result.training.get("skipped_images"):
            say.warn(f"{result.training['skipped_images']} unreadable image(s) skipped")
        if preview:
            say.info(f"preview: {preview}")
        if job.loss_plot:
            say.info(f"loss curves: {job.loss_plot}")
        if job.log_dir:
            say.info(f"TensorBoard logs: {job.log_dir} (see them with: tensorboard --logdir {job.log_dir})")
        say.info(f"model: {job.out}")


train = command("train", cls=SectionedCommand)(_TrainCommand())


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
Tiles = Annotated[
    Optional[bool],
    typer.Option(
        "--tiles/--whole",
        help="Score images in model-sized tiles at their own resolution (the highest tile score), "
        "or whole, fitted to the model's size as it was trained (its --resize: pad, crop or stretch).",
        show_default="tiles for models trained with --patch-size, else whole",
    ),
]


def _outputs(*paths: Optional[Path]) -> None:
    from aecli.io.files import check_writable

    for path in filter(None, paths):
        check_writable(path)


def _lists(*specs: Optional[str]) -> list[Path]:
    """The files among --files-from and --labels values: inputs too, which no output may replace."""
    return [Path(spec) for spec in specs if spec and spec != "-" and Path(spec).is_file()]


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
    continuous: Annotated[
        bool, typer.Option("--continuous", help="vqvae: write the code vectors instead of the code numbers.")
    ] = False,
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels", help="A conditional model's classes, as ae train --condition reads them: folders, class "
            "(dataset labels) or FILE.csv of path,class rows.",
        ),
    ] = None,
    seed: Seed = 0,
    batch_size: BatchSize = 256,
    device: Device = None,
    workers: Workers = None,
    files_from: FilesFrom = None,
    exact_size: Annotated[
        bool, typer.Option("--exact-size", help="Reject images of another size instead of fitting them to the model.")
    ] = False,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Write one latent vector (float32 row) per image, in input order; a VQ-VAE's code numbers.

    \b
    Examples:
      ae encode ./images -m ae.safetensors > latents.npy
      ae encode ./images -m ae.safetensors -o latents.npy --index paths.txt
      ae encode ./images -m vae.safetensors --format npz -o z.npz
      ae encode sample:test -m ae.safetensors -o z.npy --plot map.png --projection tsne
      ae encode ./shapes -m cvae.safetensors --labels folders -o z.npy
      ae encode ./images -m vqvae.safetensors -o codes.npz      # whole numbers, grid shape recorded
    """
    from aecli import infer
    from aecli.data import open_inputs
    from aecli.distributed import gathered
    from aecli.io import latents
    from aecli.io.files import guard_outputs
    from aecli.ui import Messages, StreamProgress

    say = Messages(quiet)
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
    inputs = [*images.files(), *_lists(files_from, labels)]
    guard_outputs(inputs, images.directories, files=[("-o", target), ("--index", index), ("--plot", plot)])
    if plot and len(images) < 2:
        raise UsageError(f"--plot: a latent map needs at least 2 images, {images.description} holds 1")
    loaded = infer.load_model(model, device)
    if loaded.tiling() is not None:  # a patch model: say what happens to larger images
        size = loaded.config.image_size
        say.warn(f"{model} was trained on {size}x{size} patches: each image is resized to {size}x{size} to encode it")
    with StreamProgress(say, "encode", images.refused) as progress:
        local = infer.encode(
            loaded, images, batch_size=batch_size, workers=workers, sample=sample, seed=seed,
            exact_size=exact_size, strict=not skip_bad, progress=progress, labels=labels, continuous=continuous,
        )  # fmt: skip
    result = gathered(local)
    images.require_read(len(result.vectors))
    latents.write(result.vectors, result.sources, target, fmt, result.shape)
    if index:
        latents.write_index(index, result.sources)
    if plot:
        labels, names = plots.dataset_labels(images, result.index)
        plots.latent_map(result.vectors, labels, plot, projection=projection or "pca", class_names=names, seed=seed)
        say.info(f"latent map: {plot}")
    each = "code numbers" if result.vectors.dtype.kind in "iu" else "floats"
    say.info(
        f"encoded {len(result.vectors)} images to {target or 'stdout'} ({fmt}, {result.vectors.shape[1]} {each} each)"
    )


@command()
def decode(
    latents_file: Annotated[
        str,
        typer.Argument(
            metavar="LATENTS",
            help="A .npy/.npz file of latent rows (from ae encode; a vqvae's code numbers too), or - for stdin.",
        ),
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
    from aecli.io.files import guard_outputs
    from aecli.io.pictures import write_numbered
    from aecli.ui import Messages

    say = Messages(quiet)
    if out is None and grid is None:
        raise UsageError("nothing to write: give -o DIR, --grid FILE, or both")
    _outputs(grid)
    _output_dirs(out)
    guard_outputs([] if latents_file == "-" else [Path(latents_file)], files=[("--grid", grid)])
    rows = latents.read(latents_file)
    loaded = infer.load_model(model, device)
    done = write_numbered(infer.decode(loaded, rows, batch_size), len(rows), out, grid, nrow)
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
            "--add-noise", min=0, help="Corrupt inputs with Gaussian noise of this std first (pixels in [0, 1]); "
            "with --noise, that kind's strength as ae train --sigma takes it.",
        ),
    ] = 0.0,
    noise: Annotated[
        NoiseKind,
        typer.Option(
            "--noise", help="The kind of noise --add-noise adds, as ae train "
            "--noise: poisson and poisson-gaussian (photons at --gain, then read noise of std --add-noise) need "
            "no --add-noise.",
        ),
    ] = NoiseKind("gaussian"),
    gain: Annotated[
        Optional[float],
        typer.Option("--gain", min=0, help="Photons at full intensity, for --noise poisson and "
                     "poisson-gaussian."),
    ] = None,
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
    whole: Annotated[
        bool,
        typer.Option(
            "--whole",
            help="Fit each image to the model's size as it was trained (--resize of ae train) instead of tiling it.",
        ),
    ] = False,
    overlap: Annotated[
        float, typer.Option("--overlap", min=0, max=0.9, help="Overlap of neighbouring tiles, as a fraction of a tile.")
    ] = 0.5,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta", help="Average the model's outputs over each input's 8 flips and quarter turns (test-time "
            "augmentation): 8x the time for a cleaner result (+0.1 to +0.2 dB on a photo: docs/benchmarks.md).",
        ),
    ] = False,
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
    quiet: _quiet_but("--reference") = False,
) -> None:
    """Denoise images of any size (larger than the model: in blended tiles).

    \b
    Examples:
      ae denoise ./noisy -m dae.safetensors -o ./clean
      ae denoise photo.jpg -m dae.safetensors -o out/
      ae denoise ./clean -m dae.safetensors --add-noise 0.2 --reference ./clean -o out/
      ae denoise ./clean -m dae.safetensors --noise poisson --gain 30 --reference ./clean -o out/
      ae denoise photo.png -m dae.safetensors --tta -o out/         # 8x the time, a little cleaner
    """
    from aecli import infer
    from aecli.data import open_inputs
    from aecli.distributed import gathered
    from aecli.infer.restore import denoise_to_files, plan_outputs, write_summary
    from aecli.ui import Messages, StreamProgress, print_quality

    say = Messages(quiet)
    if out is None and reference is None and grid is None and save_noisy is None:
        raise UsageError("nothing to write: give -o DIR (or --reference to only measure, --grid or --save-noisy)")
    if report and not reference:
        raise UsageError("--report needs --reference")
    noise_kind = noise.value
    photon = noise_kind in PHOTON_KINDS
    if save_noisy and not add_noise and not photon:
        raise UsageError("--save-noisy needs --add-noise")
    if gain is not None and gain <= 0:
        raise UsageError("--gain must be > 0 (photons at full intensity)")
    if photon and gain is None:
        raise UsageError(f"--noise {noise_kind} needs --gain (photons at full intensity)")
    if gain is not None and not photon:
        raise UsageError("--gain needs --noise poisson or poisson-gaussian")
    if noise_kind not in ("gaussian", *PHOTON_KINDS) and not add_noise:
        raise UsageError(f"--noise {noise_kind} needs --add-noise, its strength")
    if noise_kind == "poisson" and add_noise:
        raise UsageError("--noise poisson adds no read noise: use --noise poisson-gaussian with --add-noise")
    _outputs(report, grid)
    _output_dirs(out, save_noisy)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    references = infer.References(reference, images) if reference else None
    targets = plan_outputs(images, out, save_noisy, overwrite, grid, report, references)
    loaded = infer.load_model(model, device)
    if not loaded.capabilities.denoise:
        say.warn(
            f"{model} (variant {loaded.config.variant}) was not trained to denoise: its output is a reconstruction"
        )
    with StreamProgress(say, "denoise", images.refused) as progress:
        local = denoise_to_files(
            loaded, images, targets, references, keep=nrow, noise=add_noise, noise_kind=noise_kind,
            gain=gain or 0.0, seed=seed, whole=whole,
            overlap=overlap, tta=tta, batch_size=batch_size, workers=workers, strict=not skip_bad, progress=progress,
        )  # fmt: skip
    done = gathered(local)  # each process wrote its own images; the rest is written once
    images.require_read(done.count)
    write_summary(done, grid, report)
    if references:
        added = f"{noise_kind} gain {gain:g}" if photon else f"{add_noise:g}" if add_noise else ""
        if add_noise and noise_kind != "gaussian":
            added += f", sigma {add_noise:g}" if photon else f" {noise_kind}"
        print_quality(done.quality.summary(), len(done.quality.rows), added)
    say.info(f"denoised {done.count} images" + (f" to {out}/" if out else "") + (f"; grid: {grid}" if grid else ""))


@command()
def sample(
    model: ModelPath = ...,
    n: Annotated[
        Optional[int], typer.Option("-n", "--count", min=1, help="How many images to draw.", show_default="64")
    ] = None,
    temperature: Annotated[
        Optional[float],
        typer.Option(
            "--temperature", min=0, help="Scale of the latent draw: below 1 is safer, above 1 more varied.",
            show_default="1.0",
        ),
    ] = None,
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
    sampler: Annotated[
        Optional[str],
        typer.Option(
            "--sampler",
            metavar="prior|normal|gmm[:K]",
            help="What latents are drawn from: prior (the code prior a vqvae learnt), normal (a VAE's prior, a "
            "plain model's fitted Gaussian) or gmm, the Gaussian mixture fitted to the training latents after "
            "training (`ae info` lists a file's samplers).",
            show_default="prior where the model learnt one, else normal",
        ),
    ] = None,
    class_name: Annotated[
        Optional[list[str]],
        typer.Option(
            "--class", help="A conditional model's class to draw (`ae info` lists them); repeat it for several, "
            "or give all for every class: -n of each, the same draws in each class.",
        ),
    ] = None,
    seed: Seed = 0,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Draw new images: from a VAE's prior, a VQ-VAE's code prior, or a latent Gaussian or mixture (--sampler).

    \b
    Examples:
      ae sample -m vae.safetensors -n 64 -o samples/ --grid samples.png --seed 1
      ae sample -m ae.safetensors --sampler gmm -n 64 --grid two-stage.png
      ae sample -m ae.safetensors --interpolate a.png b.png --steps 8 --grid walk.png
      ae sample -m cvae.safetensors --class sneaker -n 16 --grid sneakers.png
      ae sample -m cvae.safetensors --class all -n 8 --grid classes.png      # a row per class
    """
    from aecli import infer, samplers
    from aecli.io.files import guard_outputs
    from aecli.io.pictures import numbered, write_numbered
    from aecli.ui import Messages

    say = Messages(quiet)
    chosen = samplers.parse(sampler) if sampler is not None else None
    if out is None and grid is None:
        raise UsageError("nothing to write: give -o DIR, --grid FILE, or both")
    drawing = {"-n": n, "--temperature": temperature, "--sampler": sampler, "--class": class_name}
    if interpolate and any(v is not None for v in drawing.values()):
        given = ", ".join(option for option, v in drawing.items() if v is not None)
        raise UsageError(f"--interpolate decodes the line between two images; {given} only set what is drawn")
    _outputs(grid)
    _output_dirs(out)
    if interpolate:  # the numbered PNGs must not land on the two ends
        written = [("-o", path) for path in numbered(out, steps)] if out else []
        guard_outputs([Path(spec).expanduser() for spec in interpolate], files=[("--grid", grid)], written=written)
    loaded = infer.load_model(model, device)
    if interpolate:
        a, b = (infer.one_image(spec) for spec in interpolate)
        images = infer.interpolate(loaded, a, b, steps)
        what = f"{steps} steps from {interpolate[0]} to {interpolate[1]}"
    else:
        images, source = infer.sample(
            loaded, n or 64, temperature=1.0 if temperature is None else temperature, seed=seed, sampler=chosen,
            label=class_name,
        )
        what = f"{len(images)} samples from {source}"
    write_numbered([images], len(images), out, grid, nrow)
    say.info(f"drew {what}" + (f" to {out}/" if out else "") + (f"; grid: {grid}" if grid else ""))


@command()
def score(
    inputs: Inputs = None,
    model: ModelPath = ...,
    metric: Annotated[
        Optional[str],
        typer.Option(
            "--metric",
            help="combined (mse and latent distance), mse, mae, bce, ssim, latent, elbo (VAE), segmentation "
            "(draem), transforms or geometric (geometric), rarity (vqvae). See docs/thresholds.md.",
            show_default="combined (segmentation for draem, geometric for geometric); mse for model files "
            "without latent statistics",
        ),
    ] = None,
    threshold: Annotated[
        str, typer.Option("--threshold", help="auto (model calibration at --fpr), a number, or a percentile like p95.")
    ] = "auto",
    fpr: Annotated[
        Optional[float],
        typer.Option("--fpr", help="auto: false-positive rate on normal images.", show_default="0.01"),
    ] = None,
    contamination: Annotated[
        Optional[float], typer.Option("--contamination", help="Flag this fraction of the scored set, the highest.")
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option("--format", help="table, csv, jsonl or json.", show_default="table on a terminal, else csv"),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Write the scores to FILE instead of stdout (-: stdout).")
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
    report: Annotated[
        Optional[Path],
        typer.Option(
            "--report",
            file_okay=False,
            help="Also write an HTML report to DIR/index.html: summary, histogram, the flagged images' maps; "
            "with --labels ROC, precision-recall and the misses (matplotlib).",
        ),
    ] = None,
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels", help="Evaluate: folders (good/ or normal/ is normal), class=K (dataset labels), or FILE.csv."
        ),
    ] = None,
    tiles: Tiles = None,
    batch_size: BatchSize = 256,
    device: Device = None,
    workers: Workers = None,
    files_from: FilesFrom = None,
    skip_bad: SkipBad = False,
    max_pixels: MaxPixels = None,
    quiet: _quiet_but("--labels") = False,
) -> None:
    """Score images for anomaly (higher: more anomalous) and flag those above a threshold.

    Exit status: 0, or 3 with --fail-on-anomaly when anything is flagged.

    \b
    Examples:
      ae score ./incoming -m ae.safetensors
      ae score ./incoming -m ae.safetensors --format jsonl > scores.jsonl
      ae score ./test -m ae.safetensors --labels folders --maps maps/ --plot scores.png
      ae score ./test -m ae.safetensors --labels folders --report report/
      ae score ./incoming -m ae.safetensors --contamination 0.05 --fail-on-anomaly
    """
    from aecli import infer
    from aecli.data import open_inputs
    from aecli.distributed import gathered, total
    from aecli.io.files import guard_outputs, mirror_targets
    from aecli.io.tabular import write_records
    from aecli.scoring import scores, thresholds
    from aecli.ui import Messages, StreamProgress, print_evaluation, print_pixel_evaluation, print_table, score_table

    say = Messages(quiet)
    out = None if out == Path("-") else out
    scores.check_metric(metric)
    spec = thresholds.parse(threshold, fpr, contamination)
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
    if report:
        from aecli.report import score_report

        score_report.check(report)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    heatmaps = mirror_targets(maps, *images.mirrored()) if maps else []  # two inputs on one map: refused now
    guard_outputs(
        [*_lists(files_from, labels), *images.files()], images.directories, files=[("-o", out), ("--plot", plot)],
        directories=[("--maps", maps)], written=[("--maps", path) for path in heatmaps],
    )  # fmt: skip
    if report:
        score_report.check(report, images, outputs={"-o": out, "--plot": plot, "--maps": maps})
    truth = None
    if labels:
        from aecli.scoring.labels import labels_for

        truth = labels_for(images, labels)
    loaded = infer.load_model(model, device)
    if loaded.capabilities.skips and not loaded.capabilities.default_metric:
        say.warn(f"{model} is a unet: its skip connections reconstruct anomalies too; --arch conv models score better")
    options = dict(batch_size=batch_size, workers=workers, strict=not skip_bad, tiles=tiles)
    with StreamProgress(say, "score", images.refused) as progress:
        local = scores.score(loaded, images, progress=progress, **options)
    scored = gathered(local)
    images.require_read(len(scored.index))
    result = scores.assess(
        loaded, scored, metric=metric, threshold=spec, fpr=0.01 if fpr is None else fpr, contamination=contamination,
        labels=truth,
    )
    records = result.records(top)
    if fmt == "table" and out is None:
        print_table(score_table(records))
    else:
        write_records(records, "csv" if fmt == "table" else fmt, out)
    n, flagged = len(result.flagged), int(result.flagged.sum())
    say.info(f"{result.metric} threshold {result.threshold.value:.6g} ({result.threshold.how})")
    for caveat in result.caveats:
        say.warn(caveat)
    say.info(f"flagged {flagged} of {n} images ({flagged / max(n, 1):.1%})")
    if result.evaluation is not None:
        print_evaluation(result.evaluation, result.threshold.value)
        from aecli.scoring.pixel_metrics import evaluate_pixels

        located = evaluate_pixels(loaded, images, truth, **options)  # where MVTec-style masks are found
        if located is not None:
            print_pixel_evaluation(located)
    if maps:
        from aecli.scoring.maps import write_maps

        written = total(write_maps(loaded, images, result.map_rows(top, maps_all), maps, **options))
        say.info(f"heatmaps: {written} in {maps}/")
    if plot:
        auroc = result.evaluation.auroc if result.evaluation is not None else None
        score_histogram(result.scores.of(result.metric), result.threshold, plot, result.labels, result.metric, auroc)
        say.info(f"histogram: {plot}")
    if report:
        made = score_report.write_score_report(report, loaded, images, result, **options)
        say.info(f"report: {made.index}")
    if fail_on_anomaly and flagged:
        raise typer.Exit(3)


@command()
def calibrate(
    inputs: Inputs = None,
    model: ModelPath = ...,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Write a calibrated copy here instead of updating MODEL.")
    ] = None,
    tiles: Tiles = None,
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
    from aecli.data import open_inputs
    from aecli.distributed import gathered
    from aecli.io import modelfile
    from aecli.scoring import calibration
    from aecli.scoring.scores import score
    from aecli.ui import Messages, StreamProgress

    say = Messages(quiet)
    if out is not None:
        modelfile.check_replaceable(out)
    _outputs(out or model)
    images = open_inputs(inputs or [], files_from, max_pixels, skip_bad)
    loaded = infer.load_model(model, device)
    with StreamProgress(say, "calibrate", images.refused) as progress:
        local = score(
            loaded, images, batch_size=batch_size, workers=workers, strict=not skip_bad, tiles=tiles, progress=progress
        )
    scores = gathered(local)
    if len(scores.index) < 2:
        raise InputError(f"calibration needs at least 2 readable images, got {len(scores.index)}")
    record = {**calibration.record(scores.values, "calibration", loaded.device.type), "source": images.description}
    modelfile.replace_calibration(model, record, out)
    p99 = record["metrics"]["mse"]["p99"]
    say.info(f"calibrated {out or model} on {len(scores.index)} images ({images.description}); mse p99 {p99:.6g}")


@command()
def export(
    model: ModelPath = ...,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "-o", "--out", help="Base name of the files: m.onnx writes m.encode.onnx, m.score.onnx, ...",
            show_default="MODEL with .onnx",
        ),
    ] = None,
    fpr: Annotated[
        float, typer.Option("--fpr", help="False-positive rate of the calibrated thresholds stored (as ae score --fpr).")
    ] = 0.01,
    quiet: Quiet = False,
) -> None:
    """Write a model as ONNX graphs that run with onnxruntime alone.

    One file per function the model has: encode, decode, reconstruct or denoise, and score (every
    metric, the flag at the calibrated threshold, the error map). Each takes uint8 pixels
    (N, H, W, C) and does the model's scaling, channels and fitting itself; the config and the
    thresholds are in its metadata. Every graph is checked against ae before it is written; the
    paths go to stdout. Needs pip install 'aecli[onnx]'; see docs/export.md.

    \b
    Examples:
      ae export -m ae.safetensors -o ae.onnx
      python examples/onnx-score.py ./incoming ae.score.onnx > scores.csv
    """
    from aecli.export import export as to_onnx
    from aecli.ui import Messages

    done = to_onnx(model, out, fpr=fpr)
    for exported in done:
        typer.echo(exported.path)
    Messages(quiet).info(f"exported {', '.join(e.function for e in done)}, each checked against ae in onnxruntime")


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
    from aecli.ui import Messages, model_table, print_json, print_table

    details = describe(model)
    if as_json:
        print_json(details)
    else:
        print_table(model_table(details))
    for problem in details["problems"] + details["caveats"]:  # other commands refuse files with problems
        Messages().warn(problem)


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

    In about a minute it denoises, samples a VAE, maps latents, scores anomalies and finds
    scratches on a texture it draws. Every step
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
    """The `ae` script. A usage error is one line too, naming where help is, not click's usage block."""
    try:
        returned = app(prog_name="ae", standalone_mode=False)
    except OSError as e:  # help or the version onto a full disk; a command reports its own inside it
        typer.echo(f"Error: cannot write to standard output: {e.strerror or e}", err=True)
        sys.exit(1)
    except Exception as e:  # click's (vendored by typer) errors carry exit_code and format_message
        message = getattr(e, "format_message", None)
        if message is None or not isinstance(getattr(e, "exit_code", None), int):
            raise
        text = message()
        if text.startswith("Usage:"):  # `ae` alone, `ae train` with no inputs: the help itself
            typer.echo(text, err=True)
        else:
            ctx = getattr(e, "ctx", None)
            where = f" (see {ctx.command_path} -h)" if ctx is not None else ""
            typer.echo(f"Error: {' '.join(text.split())}{where}", err=True)
        sys.exit(e.exit_code)
    sys.exit(returned if isinstance(returned, int) else 0)
