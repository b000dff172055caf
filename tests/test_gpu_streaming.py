"""JPEG batches decoded on the GPU (data.gpu_jpeg) mean what the CPU's decoding means.

Reading and decoding a batch, and the stream of them (a reading thread, a decoding thread), also
run with device="cpu", where decode_jpeg takes the same batched call: the header checks, the
split between the two decoders, the fitting and the threads are tested on every machine; the
commands' own CUDA runs are skipped without one.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import blobs

from aecli.data import batch_indices, open_inputs, stream
from aecli.data.gpu_jpeg import Encoded, decode, read
from aecli.errors import InputError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request) -> torch.device:
    return torch.device(request.param)


def jpeg(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=92, **options)
    return buffer.getvalue()


@pytest.fixture
def jpegs(tmp_path):
    """Grey and colour JPEGs of several sizes, baseline and progressive: all nvjpeg's to decode."""
    folder = tmp_path / "jpegs"
    folder.mkdir()
    grey, colour = blobs(6, size=16, seed=3), blobs(6, size=24, channels=3, seed=4)
    for i, image in enumerate(grey):
        (folder / f"g{i}.jpg").write_bytes(jpeg(image))
    for i, image in enumerate(colour):
        (folder / f"c{i}.jpeg").write_bytes(jpeg(image, progressive=i % 2 == 1))
    wide = np.ascontiguousarray(np.concatenate([colour[0], colour[1]], axis=1))  # 48 x 24: a size to fit
    (folder / "wide.jpg").write_bytes(jpeg(wide))
    return folder


@pytest.fixture
def awkward(jpegs):
    """Beside them: a CMYK JPEG (read_image converts it with Pillow), a cut-short JPEG, and one that
    ends as a whole JPEG does but whose tables and data are zeros (nvjpeg fails on it, then Pillow)."""
    rgb = blobs(1, size=16, channels=3, seed=5)[0]
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, "JPEG", quality=95)
    (jpegs / "k-cmyk.jpg").write_bytes(buffer.getvalue())
    (jpegs / "t-cut.jpg").write_bytes(jpeg(rgb)[:200])
    whole = bytearray(jpeg(rgb))
    whole[200:-2] = bytes(len(whole) - 202)
    (jpegs / "z-garbage.jpg").write_bytes(bytes(whole))
    return jpegs


def on_device(device, images, channels, size, resize="stretch", strict=False):
    indices = np.arange(len(images))
    encoded = read(images, indices, channels, size, resize, strict)
    assert isinstance(encoded, Encoded) and encoded.rows
    return decode(encoded, images, device, channels, size, resize, strict)


@pytest.mark.parametrize("channels, size, resize", [(1, 16, "stretch"), (3, 16, "pad"), (3, 20, "crop"), (None, None, None)])
def test_gpu_decoded_batches_match_the_cpu_decoding(device, jpegs, channels, size, resize):
    images = open_inputs([str(jpegs)])
    cpu = images.load(np.arange(len(images)), channels, size, resize or "stretch")
    gpu = on_device(device, images, channels, size, resize or "stretch")
    assert gpu.error is None and not gpu.skipped and gpu.index.tolist() == cpu.index.tolist()
    if size:
        assert gpu.pixels.device.type == device.type and gpu.pixels.shape == cpu.pixels.shape
        assert (gpu.pixels.cpu() - cpu.pixels).abs().mean() < 2 / 255
    else:
        assert [x.shape for x in gpu.pixels] == [x.shape for x in cpu.pixels]  # grey stays 1 channel, colour 3
        for g, c in zip(gpu.pixels, cpu.pixels):
            assert g.device.type == device.type and (g.cpu() - c).abs().mean() < 2 / 255


def test_jpegs_nvjpeg_cannot_take_go_the_cpu_way_skipped_or_converted_as_there(device, awkward):
    images = open_inputs([str(awkward)])
    cpu = images.load(np.arange(len(images)), 3, 16)
    gpu = on_device(device, images, 3, 16)
    assert gpu.error is None and gpu.index.tolist() == cpu.index.tolist()
    assert sorted(gpu.skipped) == sorted(cpu.skipped) and any("t-cut.jpg" in m for m in gpu.skipped)
    assert (gpu.pixels.cpu() - cpu.pixels).abs().mean() < 2 / 255  # the CMYK one in its true colours too
    strict = on_device(device, images, 3, 16, strict=True)
    assert strict.error == images.load(np.arange(len(images)), 3, 16, strict=True).error


def test_only_whole_plain_jpegs_reach_the_batched_decoder(awkward):
    """nvjpeg crashed a process on a header of zeros: such files, CMYK and cut ones go to read_image."""
    whole = bytearray(jpeg(blobs(1, size=16, channels=3, seed=6)[0]))
    start = whole.index(b"\xff\xc4") + 4  # the first Huffman table's body: its code counts zeroed, markers intact
    whole[start : start + 17] = bytes(17)
    (awkward / "h-zero-table.jpg").write_bytes(bytes(whole))
    images = open_inputs([str(awkward)])
    encoded = read(images, np.arange(len(images)), 3, 16, "stretch", False)
    sent = {Path(images.name(i)).name for i in encoded.rows}
    kept_back = {Path(images.name(i)).name for i in encoded.decoded.index.tolist()}
    assert len(sent) == 13 and not sent & {"k-cmyk.jpg", "t-cut.jpg", "z-garbage.jpg", "h-zero-table.jpg"}
    assert kept_back == {"k-cmyk.jpg"}  # the others are skipped by read_image, as without a GPU
    skipped = sorted(Path(m.split(":")[0]).name for m in encoded.decoded.skipped)
    assert skipped == ["h-zero-table.jpg", "t-cut.jpg", "z-garbage.jpg"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_jpeg_turned_fifo_after_listing_is_not_waited_on(jpegs):
    images = open_inputs([str(jpegs)])
    (jpegs / "g0.jpg").unlink()
    os.mkfifo(jpegs / "g0.jpg")  # nothing will ever write to it
    found = []
    reader = threading.Thread(
        target=lambda: found.append(read(images, np.arange(len(images)), 3, 16, "stretch", False)), daemon=True
    )
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading blocked on the FIFO"
    assert len(found[0].rows) == len(images) - 1 and any("g0.jpg" in m for m in found[0].decoded.skipped)


def test_gpu_decoding_keeps_the_exact_size_error(device, jpegs):
    images = open_inputs([str(jpegs)])
    error = on_device(device, images, 3, 24, resize=None).error
    assert error == images.load(np.arange(len(images)), 3, 24, resize=None).error and "g0.jpg: image is 16x16" in error


def test_the_stream_reads_decodes_and_hands_over_in_three_threads_in_order(device, awkward):
    images = open_inputs([str(awkward)])
    cpu = images.load(np.arange(len(images)), 3, 16)
    rows = batch_indices(np.arange(len(images)), 4)
    batches = list(stream(images, rows, 3, 16, device=device, jpegs_on_device=True))
    assert torch.cat([b.index for b in batches]).tolist() == cpu.index.tolist()
    assert sorted(m for b in batches for m in b.skipped) == sorted(cpu.skipped)
    pixels = torch.cat([b.pixels.cpu() for b in batches])
    assert (pixels - cpu.pixels).abs().mean() < 2 / 255

    with pytest.raises(InputError, match="t-cut.jpg"):
        list(stream(images, rows, 3, 16, device=device, jpegs_on_device=True, strict=True))
    left = stream(images, rows, 3, 16, device=device, jpegs_on_device=True)
    next(left)
    left.close()  # a caller that stops early stops both threads
    assert not any(t.name == "aecli-prefetch" for t in threading.enumerate())


@needs_cuda
@pytest.mark.parametrize("workers", ["0", "2"])
def test_encode_on_cuda_from_jpegs_is_close_to_the_cpu(run, models, jpegs, workers):
    for device in ("cpu", "cuda"):
        result = run("encode", jpegs, "-m", models["ae"], "--device", device, "--workers", workers,
                     "--batch-size", "4", "-o", f"{device}.npy", "-q")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    cpu, gpu = np.load("cpu.npy"), np.load("cuda.npy")
    assert gpu.shape == cpu.shape == (13, cpu.shape[1])
    scale = np.abs(cpu).max()
    np.testing.assert_allclose(gpu, cpu, atol=0.05 * scale, rtol=0.05)  # bf16 autocast and two JPEG decoders


@needs_cuda
def test_encode_on_cuda_skips_and_fails_as_the_cpu_does(run, models, awkward):
    outcomes = {}
    for device in ("cpu", "cuda"):
        skipped = run("encode", awkward, "-m", models["ae"], "--device", device, "--skip-bad", "-o", f"{device}.npy")
        strict = run("encode", awkward, "-m", models["ae"], "--device", device, "-o", f"strict-{device}.npy")
        outcomes[device] = (skipped.exit_code, len(np.load(f"{device}.npy")), strict.exit_code, strict.stderr)
        assert "t-cut.jpg" in skipped.stderr and strict.stderr.count("\n") == 1
    assert outcomes["cuda"] == outcomes["cpu"]
    assert outcomes["cpu"][:3] == (0, 14, 1)  # the CMYK one loads; the cut one and the garbage one do not


@needs_cuda
def test_denoise_and_score_on_cuda_from_jpegs_are_close_to_the_cpu(run, models, jpegs, tmp_path):
    for device in ("cpu", "cuda"):
        assert run("denoise", jpegs, "-m", models["dae"], "--device", device, "-o", f"d-{device}", "-q").exit_code == 0
        scored = run("score", jpegs, "-m", models["ae"], "--device", device, "--metric", "mse",
                     "--maps", f"m-{device}", "--maps-all", "-o", f"{device}.csv", "-q")  # fmt: skip
        assert scored.exit_code == 0, scored.stderr
    cpu_files = sorted(p.relative_to(tmp_path / "d-cpu") for p in (tmp_path / "d-cpu").rglob("*.png"))
    assert len(cpu_files) == 13
    for rel in cpu_files:
        a = np.asarray(Image.open(tmp_path / "d-cpu" / rel), np.float32)
        b = np.asarray(Image.open(tmp_path / "d-cuda" / rel), np.float32)
        assert a.shape == b.shape and np.abs(a - b).mean() < 4
    assert len(list((tmp_path / "m-cuda").rglob("*.png"))) == 13
    cpu_rows = (tmp_path / "cpu.csv").read_text().splitlines()
    gpu_rows = (tmp_path / "cuda.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in cpu_rows] == [r.split(",")[0] for r in gpu_rows]
