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
from pathlib import Path
from typing import Annotated, Optional

import typer

from aecli import __version__
from aecli.errors import AecliError

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
                return fn(*a, **k)
            except AecliError as e:
                _fail(e, str(e), e.exit_code)
            except KeyboardInterrupt as e:
                _fail(e, "interrupted", 130)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
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
FilesFrom = Annotated[Optional[str], typer.Option("--files-from", help="Read more inputs, one per line, from FILE (- for stdin).")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps (default: $AE_DEVICE, else auto).")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Loader processes (default: 0 for arrays, a few for image files).")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No progress or messages on stderr; errors still show.")]


@command()
def train(
    inputs: Inputs = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Model file to write (default: VARIANT.safetensors).")] = None,
    variant: Annotated[Optional[str], typer.Option(help="ae, denoising or vae.", show_default="ae")] = None,
    arch: Annotated[Optional[str], typer.Option(help="conv (a true bottleneck) or unet (skip connections; keeps detail).", show_default="unet for denoising, else conv")] = None,
    latent_dim: Annotated[Optional[int], typer.Option(help="Length of each image's latent vector.", show_default="32")] = None,
    sigma: Annotated[Optional[float], typer.Option(help="denoising: noise strength.", show_default="0.2")] = None,
    noise: Annotated[Optional[str], typer.Option(help="denoising: gaussian, salt-pepper, mask or mixed.", show_default="gaussian")] = None,
    beta: Annotated[Optional[float], typer.Option(help="vae: weight of the KL term.", show_default="1.0")] = None,
    loss: Annotated[Optional[str], typer.Option(help="Pixel loss: mse or bce.", show_default="mse")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training images.", show_default="10; 20 for denoising")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step.", show_default="128; 32 for denoising")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam's peak learning rate.", show_default="0.001; 0.002 for denoising")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="cosine (5% warm-up, decay to 0) or constant.", show_default="cosine")] = None,
    val_split: Annotated[Optional[float], typer.Option(help="Fraction held out for validation and calibration.", show_default="0.1")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Model input size (square); others are resized.", show_default="first image's")] = None,
    channels: Annotated[Optional[int], typer.Option(help="1 (grey) or 3 (colour).", show_default="first image's")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for split, shuffle and noise: same seed, same model on CPU.", show_default="0")] = None,
    device: Device = None,
    workers: Workers = None,
    config: Annotated[Optional[Path], typer.Option("--config", exists=True, dir_okay=False, help="YAML file of these settings; flags override it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out (same settings, same result).")] = False,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="PNG grid of validation inputs and reconstructions.")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved settings as YAML and exit.")] = False,
    files_from: FilesFrom = None,
    no_resize: Annotated[bool, typer.Option("--no-resize", help="Reject images of another size instead of resizing.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at an unreadable image instead of skipping it.")] = False,
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
    """
    from aecli.config import load_settings, to_yaml

    overrides = dict(
        variant=variant, arch=arch, latent_dim=latent_dim, sigma=sigma, noise=noise, beta=beta, loss=loss,
        epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, val_split=val_split, image_size=image_size,
        channels=channels, seed=seed, device=device, workers=workers,
        resize=False if no_resize else None, strict=True if strict else None,
    )  # fmt: skip
    settings = load_settings(config, overrides)
    if print_config:
        sys.stdout.write(to_yaml(settings))
        return
    from aecli import train as training
    from aecli.data import open_inputs
    from aecli.files import check_writable
    from aecli.modelfile import check_replaceable, load
    from aecli.ui import Messages, TrainProgress

    say = Messages(quiet)
    out = out or Path(f"{settings.model.variant}.safetensors")
    previous = None
    if resume:
        previous = load(out, with_optimizer=True)
        settings = training.resume_settings(previous, overrides)
    else:
        check_replaceable(out)
    check_writable(out)
    for target in filter(None, [preview]):
        check_writable(target)
    images = open_inputs(inputs or [], files_from)
    if images.non_images:
        say.info(f"skipped {images.non_images} non-image file(s)")
    stop = threading.Event()
    with TrainProgress(say) as progress, _stop_on_sigint(stop):
        result = training.fit(images, settings, out, resume=previous, callbacks=progress, stop=stop, preview=preview)
    summary = result.training
    say.info(
        f"trained {result.config.variant} ({result.config.arch}, {result.config.image_size}x{result.config.image_size}x"
        f"{result.config.channels}, latent {result.config.latent_dim}) on {summary['data']['train']} images, "
        f"{summary['epochs']} epochs in {summary['duration_s']:.1f} s; train loss {summary['train_loss'][-1]:.5g}"
        + (f", val {summary['val_loss'][-1]:.5g}" if summary["val_loss"] else "")
    )
    if summary.get("skipped_images"):
        say.warn(f"{summary['skipped_images']} unreadable image(s) skipped (--strict makes them fatal)")
    if preview:
        say.info(f"preview: {preview}")
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


@command()
def info(
    model: Annotated[Path, typer.Argument(help="A model file made by `ae train`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Everything as JSON, for machines.")] = False,
) -> None:
    """Show what a model file holds: variant, config, training summary, calibration.

    \b
    Examples:
      ae info dae.safetensors
      ae info dae.safetensors --json | jq .calibration.metrics.mse.p99
    """
    from aecli.modelfile import describe
    from aecli.ui import model_table, print_json, print_table

    details = describe(model)
    if as_json:
        print_json(details)
    else:
        print_table(model_table(details))


def main() -> None:
    app(prog_name="ae")
