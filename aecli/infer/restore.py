"""The job behind `ae denoise`: denoise a set of images into PNG files beside a quality report.

infer.denoise yields one result at a time; this writes each where its input's relative path says,
measures it against a reference when there is one, and keeps a few for a grid. Under torchrun
each process writes its own images; the command gathers the results and rank 0 writes the rest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aecli import infer
from aecli.data import ImageSet
from aecli.io.files import atomic_output, guard_outputs, leader_writes, mirror_targets, real
from aecli.io.pictures import save_png, save_rows
from aecli.io.writer import Writer
from aecli.scoring.quality import QualityReport


@dataclass
class Restored:
    """What was written: the count, the PSNR/SSIM report (empty without references), grid rows."""

    count: int = 0
    quality: QualityReport = field(default_factory=QualityReport)
    shown: list[list[torch.Tensor]] = field(default_factory=list)  # [noisy, clean(, reference)] per image
    keep: int = 8  # at most this many in `shown`

    @classmethod
    def merge(cls, parts: list[Restored]) -> Restored:
        """Shards in order, as one (what distributed.gathered calls); the grid keeps the first rows."""
        quality = QualityReport()
        quality.rows = [row for p in parts for row in p.quality.rows]
        keep = parts[0].keep
        return cls(sum(p.count for p in parts), quality, [s for p in parts for s in p.shown][:keep], keep)


@leader_writes
def write_summary(done: Restored, grid: Path | None = None, report: Path | None = None) -> None:
    """The grid of noisy, clean (and reference) rows, and the CSV of PSNR and SSIM per image."""
    if grid and done.shown:
        save_rows(grid, [list(row) for row in zip(*done.shown)])
    if report:
        with atomic_output(report) as f:
            f.write(done.quality.csv().encode())


def plan_outputs(
    images: ImageSet, out: Path | None, noisy: Path | None, overwrite: bool,
    grid: Path | None = None, report: Path | None = None, references: infer.References | None = None,
) -> dict[str, list[Path]]:  # fmt: skip
    """Where each image's outputs go, refusing the inputs' and references' directories and files
    (unless `overwrite`) before any work."""
    relative, names = images.mirrored()
    options = {"out": "-o", "noisy": "--save-noisy"}
    targets = {
        name: mirror_targets(d, relative, names=names) for name, d in (("out", out), ("noisy", noisy)) if d is not None
    }
    inputs = itertools.chain(images.files(), references.files() if references else ())
    folders = [*images.directories, *([real(references.root)] if references and references.root else [])]
    guard_outputs(
        () if overwrite else inputs,
        () if overwrite else folders,
        files=[("--grid", grid), ("--report", report)],
        directories=[("-o", out), ("--save-noisy", noisy)],
        written=[] if overwrite else [(options[name], path) for name, paths in targets.items() for path in paths],
        hint="choose another path, or --overwrite",
    )
    return targets


def denoise_to_files(
    loaded: infer.Loaded,
    images: ImageSet,
    targets: dict[str, list[Path]],
    references: infer.References | None = None,
    keep: int = 8,
    **options,
) -> Restored:
    """Denoise every image (options as infer.denoise) into targets["out"] (and the noisy input
    into targets["noisy"]), measuring each against its reference; keep the first `keep` for a grid."""
    done = Restored(keep=keep)
    with Writer() as writer:  # PNGs are encoded and written while the model works on the next images
        for result in infer.denoise(loaded, images, **options):
            if "out" in targets:
                writer.submit(save_png, targets["out"][result.index], result.clean)
            if "noisy" in targets:
                writer.submit(save_png, targets["noisy"][result.index], result.noisy)
            ref = references.get(result.index, result.clean) if references else None
            if ref is not None:
                done.quality.add(images.name(result.index), result.noisy, result.clean, ref)
            if len(done.shown) < keep:
                done.shown.append([result.noisy, result.clean] + ([ref] if ref is not None else []))
            done.count += 1
    return done
