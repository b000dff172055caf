"""`ae encode` and `ae decode` through the real CLI: formats, order, pipes, and their errors."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import blobs, write_pngs

AE = [sys.executable, "-m", "aecli"]


def test_encode_writes_one_float32_row_per_image_in_input_order(run, models, png_dir):
    assert run("encode", png_dir, "-m", models["ae"], "-o", "z.npy", "--index", "paths.txt", "-q").exit_code == 0
    z = np.load("z.npy")
    assert z.shape == (24, 32) and z.dtype == np.float32
    paths = open("paths.txt").read().splitlines()
    assert paths == [str(p) for p in sorted(png_dir.iterdir())]
    # the same files named in reverse give the same rows in reverse
    reverse = [str(p) for p in reversed(sorted(png_dir.iterdir()))]
    assert run("encode", *reverse, "-m", models["ae"], "-o", "r.npy", "-q").exit_code == 0
    np.testing.assert_allclose(np.load("r.npy"), z[::-1], rtol=1e-5, atol=1e-6)


def test_encode_to_stdout_is_plain_npy_and_messages_go_to_stderr(run, models, npy_file):
    result = run("encode", npy_file, "-m", models["ae"])
    assert result.exit_code == 0, result.stderr
    z = np.load(io.BytesIO(result.stdout_bytes))
    assert z.shape == (24, 32)
    assert "encoded 24 images to stdout" in result.stderr


def test_encode_refuses_to_write_binary_to_a_terminal(models, npy_file):
    leader, follower = pty.openpty()
    out = subprocess.run(
        [*AE, "encode", str(npy_file), "-m", str(models["ae"])], stdout=follower, stderr=subprocess.PIPE, text=True
    )
    os.close(follower)
    os.close(leader)
    assert out.returncode == 2
    assert "-o FILE or redirect" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("fmt", ["npz", "csv", "jsonl"])
def test_other_formats_carry_paths_and_the_same_vectors(run, models, npy_file, fmt):
    assert run("encode", npy_file, "-m", models["ae"], "-o", "ref.npy", "-q").exit_code == 0
    expected = np.load("ref.npy")
    assert run("encode", npy_file, "-m", models["ae"], "-o", f"z.{fmt}", "-q").exit_code == 0
    if fmt == "npz":
        with np.load("z.npz") as archive:  # no pickle needed: paths are a unicode array
            vectors, paths = archive["latents"], list(archive["paths"])
    elif fmt == "csv":
        lines = open("z.csv").read().splitlines()
        assert lines[0].startswith("path,z0,z1,")
        paths = [line.split(",")[0] for line in lines[1:]]
        vectors = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    else:
        records = [json.loads(line) for line in open("z.jsonl")]
        paths, vectors = [r["path"] for r in records], np.array([r["latent"] for r in records])
    assert paths[3] == f"{npy_file}#3"
    np.testing.assert_array_equal(vectors.astype(np.float32), expected)  # text reads back as the same float32


@pytest.mark.parametrize("flag, says", [("--sample", "draws from a VAE's posterior"), ("--continuous", "code vectors")])
def test_an_option_the_model_cannot_honour_is_refused_not_ignored(run, models, npy_file, flag, says):
    result = run("encode", npy_file, "-m", models["ae"], flag, "-o", "z.npy")
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert not os.path.exists("z.npy")


def test_a_vae_encodes_to_its_mean_unless_asked_to_sample(run, models, npy_file):
    for name, extra in (("mean", []), ("s1", ["--sample"]), ("s1b", ["--sample"]), ("s2", ["--sample", "--seed", "2"])):
        assert run("encode", npy_file, "-m", models["vae"], "-o", f"{name}.npy", "-q", *extra).exit_code == 0
    mean, s1, s1b, s2 = (np.load(f"{n}.npy") for n in ("mean", "s1", "s1b", "s2"))
    assert not np.allclose(mean, s1)
    np.testing.assert_array_equal(s1, s1b)
    assert not np.allclose(s1, s2)


def test_encode_stops_at_an_unreadable_image_unless_told_to_skip(run, models, tmp_path):
    folder = tmp_path / "mixed"
    write_pngs(folder, blobs(4))
    (folder / "img001.png").write_bytes(b"not a png at all")
    result = run("encode", folder, "-m", models["ae"], "-o", "z.npy")
    assert result.exit_code == 1 and "img001.png" in result.stderr
    assert not (tmp_path / "z.npy").exists()
    result = run("encode", folder, "-m", models["ae"], "-o", "z.npy", "--skip-bad", "--index", "i.txt")
    assert result.exit_code == 0 and "skipped" in result.stderr
    assert np.load("z.npy").shape == (3, 32)
    assert "img001.png" not in open("i.txt").read()


def test_decode_writes_numbered_pngs_and_a_grid(run, models, npy_file):
    assert run("encode", npy_file, "-m", models["ae"], "-o", "z.npy", "-q").exit_code == 0
    result = run("decode", "z.npy", "-m", models["ae"], "-o", "recon", "--grid", "g.png", "--nrow", "6")
    assert result.exit_code == 0, result.stderr
    names = sorted(os.listdir("recon"))
    assert names[0] == "000000.png" and len(names) == 24
    assert Image.open("recon/000000.png").size == (16, 16)
    assert Image.open("g.png").size == (6 * 18 + 2, 4 * 18 + 2)  # 6 per row, 2-pixel padding


def test_decode_reads_latents_from_stdin(run, models, npy_file):
    assert run("encode", npy_file, "-m", models["ae"], "-o", "z.npy", "-q").exit_code == 0
    result = run("decode", "-", "-m", models["ae"], "-o", "out", input=open("z.npy", "rb").read())
    assert result.exit_code == 0, result.stderr
    assert len(os.listdir("out")) == 24


@pytest.mark.parametrize(
    "make, model, message",
    [
        (lambda: np.save("w.npy", np.zeros((3, 7), np.float32)), "ae", "rows of length 32"),
        (lambda: np.save("w.npy", np.zeros((3, 32), np.float32)), "dae", "--arch conv"),
        (lambda: open("w.npy", "wb").write(b"junk"), "ae", "not a .npy or .npz"),
        (lambda: open("w.npy", "w").write("path,z0\na.png,0.5\n"), "ae", "takes what ae encode writes as npy"),
        (lambda: np.save("w.npy", np.full((2, 32), np.nan, np.float32)), "ae", "NaN"),
    ],
)
def test_decode_errors_are_one_line(run, models, make, model, message):
    make()
    result = run("decode", "w.npy", "-m", models[model], "-o", "out")
    assert result.exit_code != 0
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not os.path.exists("out")


def test_decode_needs_somewhere_to_write(run, models):
    np.save("z.npy", np.zeros((2, 32), np.float32))
    result = run("decode", "z.npy", "-m", models["ae"])
    assert result.exit_code == 2 and "-o DIR" in result.stderr


def test_shell_pipelines_work_end_to_end(models, npy_file, tmp_path):
    """The pipes from the README, in a real shell: encode > file < numpy, encode | numpy, encode | decode."""
    ae = f"{sys.executable} -m aecli"
    redirected = subprocess.run(
        f"{ae} encode {npy_file} -m {models['ae']} -q > {tmp_path}/z.npy && "
        f'{sys.executable} -c "import numpy, sys; print(numpy.load(sys.stdin.buffer).shape)" < {tmp_path}/z.npy',
        shell=True, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert redirected.stdout.strip() == "(24, 32)"
    # numpy.load seeks, which a pipe cannot: read the pipe into memory first
    piped = subprocess.run(
        f"set -o pipefail; {ae} encode {npy_file} -m {models['ae']} -q | "
        f'{sys.executable} -c "import io, numpy, sys; print(numpy.load(io.BytesIO(sys.stdin.buffer.read())).shape)"',
        shell=True, executable="/bin/bash", capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert piped.stdout.strip() == "(24, 32)"
    subprocess.run(
        f"set -o pipefail; {ae} encode {npy_file} -m {models['ae']} -q | {ae} decode - -m {models['ae']} --grid {tmp_path}/g.png -q",
        shell=True, executable="/bin/bash", check=True,
    )  # fmt: skip
    assert Image.open(tmp_path / "g.png").size[0] > 16


def test_worker_processes_give_the_same_rows_and_report_errors_in_one_line(run, models, png_dir):
    assert run("encode", png_dir, "-m", models["ae"], "-o", "w0.npy", "--workers", "0", "-q").exit_code == 0
    assert (
        run(
            "encode", png_dir, "-m", models["ae"], "-o", "w2.npy", "--workers", "2", "--batch-size", "5", "-q"
        ).exit_code
        == 0
    )
    np.testing.assert_allclose(np.load("w0.npy"), np.load("w2.npy"), rtol=1e-5, atol=1e-6)  # batch sizes differ
    (png_dir / "img005.png").write_bytes(b"")
    result = run("encode", png_dir, "-m", models["ae"], "-o", "w.npy", "--workers", "2")
    assert result.exit_code == 1 and "img005.png: empty file" in result.stderr and result.stderr.count("\n") == 1


def test_a_spatial_latent_is_written_flat_with_its_shape_and_decodes(run, npy_file, tmp_path):
    trained = run("train", npy_file, "--no-bottleneck", "--latent-dim", "4", "--epochs", "1", "-o", "m.safetensors", "-q")
    assert trained.exit_code == 0, trained.stderr
    assert run("encode", npy_file, "-m", "m.safetensors", "-o", "z.npz").exit_code == 0
    with np.load(tmp_path / "z.npz") as z:
        shape = tuple(z["latent_shape"])
        assert z["latents"].shape == (24, int(np.prod(shape))) and shape[0] == 4 and len(shape) == 3
    assert run("decode", "z.npz", "-m", "m.safetensors", "-o", "decoded").exit_code == 0
    assert len(list((tmp_path / "decoded").glob("*.png"))) == 24


def test_a_fully_convolutional_denoiser_cleans_a_larger_image_whole(run, npy_file, tmp_path):
    import torch

    from aecli import infer

    args = ["--variant", "denoising", "--no-bottleneck", "--epochs", "1", "-o", "dae.safetensors", "-q"]
    assert run("train", npy_file, *args).exit_code == 0
    big = (np.random.default_rng(0).random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    assert run("denoise", "big.png", "-m", "dae.safetensors", "-o", "out").exit_code == 0
    written = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    model = infer.load_model(tmp_path / "dae.safetensors", "cpu")
    direct = model(torch.as_tensor(big, dtype=torch.float32)[None, None] / 255)[0, 0]
    assert written.shape == (40, 56)
    assert np.abs(written.astype(int) - np.round(direct.numpy() * 255).astype(int)).max() <= 1  # no tiles


def test_encoding_with_a_patch_model_says_that_images_are_resized(run, npy_file):
    args = ["--patch-size", "8", "--patches-per-image", "2", "--epochs", "1", "-q", "-o", "p.safetensors"]
    assert run("train", npy_file, *args).exit_code == 0
    result = run("encode", npy_file, "-m", "p.safetensors", "-o", "z.npy")
    assert result.exit_code == 0 and "trained on 8x8 patches: each image is resized to 8x8" in result.stderr
