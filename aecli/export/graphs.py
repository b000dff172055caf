"""Each function's ONNX graph, assembled and checked.

A graph is the hand-written pixel steps (pixels.py) around the model's part (cores.py), which
torch.export traces and torch.onnx translates. The tracing is done by torch.export.export itself,
so that a size it cannot keep dynamic is an error: torch.onnx.export on a module falls back to a
draft export that silently fixes such sizes (measured: a fully convolutional model exported from
a 16x16 example gave 20x32 outputs for a 21x33 input). The model's part never sees a size that
varies except a fully convolutional model's reconstruction, whose sides are multiples of
2**stages there: pixels.pad_to_multiple pads them, as its backbone would.

`check` runs a graph in onnxruntime on seeded batches, one of the model's size and channels and
one of another size with an alpha channel, and compares every output with what ae's own code
(infer, scoring: what the commands run) makes of the same uint8 pixels.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from onnx.utils import Extractor

from aecli import __version__
from aecli.errors import AecliError
from aecli.export import cores, pixels
from aecli.export.pixels import Nodes

OPSET = 18  # Resize's antialias, how images are fitted, arrived in opset 18 (onnxruntime 1.14)
INPUT = "pixels"
# the model part's inputs: model-sized images, latents, and images of any size (fully convolutional)
MODEL_INPUT, LATENT, NATIVE = "model/pixels", "model/latent", "model/native"
PIXELS = [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "height", "width", "channels"])]
# A graph is refused when an output differs from ae's by more than this times its largest value
# (at least 1): a check against an exporter that got the graph wrong, not against rounding; the
# tests hold the graphs to 1e-5 (tests/test_export.py).
CHECK_TOLERANCE = 1e-3


@dataclass
class Traced:
    """The model's part of every function: one ONNX model, and each function's inputs and outputs in it."""

    model: onnx.ModelProto
    inputs: dict[str, list[str]]
    outputs: dict[str, list[str]]  # output names in the model, "function/name"
    scorer: cores.Score

    def part(self, function: str) -> onnx.ModelProto:
        """The nodes one function needs, alone."""
        return Extractor(self.model).extract_model(self.inputs[function], self.outputs[function])


def trace(file: Any, fpr: float) -> Traced:
    """Trace the model once (cores.Functions) for all its functions."""
    model, cfg = file.model, file.config
    caps = model.capabilities
    size, channels, step = cfg.image_size, cfg.channels, 2 ** len(cfg.widths)
    everything = cores.Functions(model, file, fpr).eval()
    recon = "denoise" if caps.denoise else "reconstruct"
    Dim = torch.export.Dim
    # each input of Functions.forward: its name in the graph, an example, its dynamic dimensions
    given = {"x": (MODEL_INPUT, torch.zeros(2, channels, size, size), {0: Dim("batch")})}
    outputs = {"encode": ["encode/latent"]}
    if caps.decode:
        given["z"] = (LATENT, torch.zeros(3, math.prod(caps.latent_shape)), {0: Dim("latents")})
        outputs["decode"] = ["decode/image"]
    if caps.any_size:  # sides of any multiple of 2**stages; pixels.pad_to_multiple gets them there
        sides = {2: step * Dim("rows"), 3: step * Dim("cols")}
        given["native"] = (NATIVE, torch.zeros(4, channels, 2 * step, 3 * step), {0: Dim("images"), **sides})
    outputs[recon] = [f"{recon}/image"]
    outputs["score"] = [f"score/{name}" for name in everything.score.output_names]
    inputs = {"encode": [MODEL_INPUT], "decode": [LATENT], recon: [NATIVE if caps.any_size else MODEL_INPUT],
              "score": [MODEL_INPUT]}  # fmt: skip
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                everything, (), {k: v[1] for k, v in given.items()},
                dynamic_shapes={k: v[2] for k, v in given.items()}, strict=False,
            )  # fmt: skip
            onnx_program = torch.onnx.export(
                program, (), input_names=[v[0] for v in given.values()],
                output_names=[n for names in outputs.values() for n in names],
                opset_version=OPSET, dynamo=True, verbose=False, optimize=True,
            )  # fmt: skip
    except Exception as e:
        raise AecliError(f"torch cannot export this model: {str(e).splitlines()[0]}") from None
    return Traced(onnx_program.model_proto, inputs, outputs, everything.score)


def build(function: str, traced: Traced, file: Any, fpr: float) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The function's whole graph, and what its metadata says beyond what every file says."""
    before, after = Nodes("pixels"), Nodes("out")
    inputs, outputs, described = BUILDERS[function](traced, file, before, after, fpr)
    core = traced.part(function)
    nodes = [*before.nodes, *core.graph.node, *after.nodes]
    initializers = [*core.graph.initializer, *before.initializers, *after.initializers]
    graph = helper.make_graph(
        nodes, f"aecli_{function}", inputs, outputs, initializers, value_info=core.graph.value_info
    )
    model = helper.make_model(
        graph, opset_imports=core.opset_import, functions=core.functions, ir_version=core.ir_version,
        producer_name="aecli", producer_version=__version__, doc_string=f"aecli {function}: see docs/export.md",
    )  # fmt: skip
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise AecliError(f"the {function} graph is not valid ONNX: {str(e).splitlines()[0]}") from None
    return model, described


def _encode(traced: Traced, file: Any, before: Nodes, after: Nodes, fpr: float):
    cfg = file.config
    _fitted_input(before, cfg.channels, cfg.image_size, cfg.resize)
    after.op("Identity", "encode/latent", out="latent")
    width = math.prod(file.model.capabilities.latent_shape)
    return PIXELS, [_value("latent", TensorProto.FLOAT, ["batch", width])], {"fit": cfg.resize}


def _decode(traced: Traced, file: Any, before: Nodes, after: Nodes, fpr: float):
    cfg = file.config
    before.op("Identity", "latent", out=LATENT)
    after.op("Identity", "decode/image", out="image")
    width = math.prod(file.model.capabilities.latent_shape)
    inputs = [_value("latent", TensorProto.FLOAT, ["batch", width])]
    return inputs, [_value("image", TensorProto.FLOAT, ["batch", cfg.image_size, cfg.image_size, cfg.channels])], {}


def _score(traced: Traced, file: Any, before: Nodes, after: Nodes, fpr: float):
    cfg, scorer = file.config, traced.scorer
    size, channels = cfg.image_size, cfg.channels
    _fitted_input(before, channels, size, cfg.resize)
    for name in scorer.output_names:
        after.op("Identity", f"score/{name}", out=name)
    outputs = [_value(n, TensorProto.FLOAT, ["batch"]) for n in scorer.metric_names]
    if scorer.flags:
        outputs.append(_value("anomalous", TensorProto.BOOL, ["batch"]))
    outputs.append(_value("map", TensorProto.FLOAT, ["batch", size, size]))
    outputs += [_value(n, TensorProto.FLOAT, ["batch", size, size, channels]) for n in ("reconstruction", "fitted")]
    patches = bool(file.train_config and file.train_config.patch_size)
    described = {
        "fit": cfg.resize,
        "metrics": json.dumps(scorer.metric_names),
        "default_metric": scorer.default_metric,
        "fpr": f"{fpr:g}",
        "thresholds": json.dumps(scorer.thresholds),
        "calibration": json.dumps(file.calibration),
        "ae_score_default": "tiles" if patches else "whole",  # how `ae score` scores this model
    }
    return PIXELS, outputs, described


def _reconstruct(traced: Traced, file: Any, before: Nodes, after: Nodes, fpr: float):
    """As `ae denoise`: the image's own colours back; a fully convolutional model at the image's
    size, a bottleneck model on the image fitted to it and the padding cut off (`--whole`)."""
    cfg, caps = file.config, file.model.capabilities
    function = "denoise" if caps.denoise else "reconstruct"
    x, _ = pixels.unit_float(before, INPUT)
    x = pixels.nchw(before, x)
    if caps.any_size:
        x, placement = pixels.pad_to_multiple(before, x, 2 ** len(cfg.widths))
    else:
        x, placement = pixels.fit(before, x, cfg.image_size, cfg.resize)
    x, shape = pixels.per_channel(before, x, cfg.channels)
    before.op("Identity", x, out=traced.inputs[function][0])
    y = pixels.from_per_channel(after, f"{function}/image", shape, cfg.channels)
    if caps.any_size or cfg.resize == "pad":
        y = pixels.cut(after, y, placement)
    after.op("Transpose", y, perm=[0, 2, 3, 1], out="image")
    outputs = [_value("image", TensorProto.FLOAT, ["batch", "out_height", "out_width", "colours"])]
    return PIXELS, outputs, {"fit": "none" if caps.any_size else cfg.resize}


BUILDERS = {"encode": _encode, "decode": _decode, "score": _score, "denoise": _reconstruct, "reconstruct": _reconstruct}


def _fitted_input(g: Nodes, channels: int, size: int, mode: str) -> None:
    """uint8 pixels to the model's channels and square, as the loader gives `ae encode` and `ae score`
    their batches (to_channels, then to_size)."""
    x, colours = pixels.unit_float(g, INPUT)
    x = pixels.nchw(g, pixels.to_model_channels(g, x, colours, channels))
    x, _ = pixels.fit(g, x, size, mode)
    g.op("Identity", x, out=MODEL_INPUT)


def _value(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def check_batches(function: str, file: Any) -> list[np.ndarray]:
    """Seeded inputs: model-shaped, and (pixels) another size with alpha and the other colour count."""
    cfg, caps = file.config, file.model.capabilities
    rng = np.random.default_rng(0)
    if function == "decode":
        return [rng.standard_normal((3, math.prod(caps.latent_shape))).astype(np.float32)]
    size, other = cfg.image_size, 4 if cfg.channels == 1 else 2
    return [
        rng.integers(0, 256, (3, size, size, cfg.channels), dtype=np.uint8),
        rng.integers(0, 256, (2, size + 5, max(size - 3, 1), other), dtype=np.uint8),
    ]


def check(function: str, model: onnx.ModelProto, file: Any) -> dict[str, float]:
    """Run the graph in onnxruntime on check_batches; the largest difference per output from ae's
    own results. A difference beyond CHECK_TOLERANCE is an error: the graph is not written."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    diffs: dict[str, float] = {}
    for batch in check_batches(function, file):
        got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch})))
        for name, want in reference(function, file, batch).items():
            if got[name].shape != want.shape:
                raise AecliError(f"the exported {function} gives {name} of shape {got[name].shape}, ae {want.shape}")
            diff = float(np.abs(got[name].astype(np.float64) - want).max()) if want.size else 0.0
            scale = float(np.abs(want).max()) if want.size else 0.0
            if not (math.isfinite(diff) and diff <= CHECK_TOLERANCE * max(1.0, scale)):
                raise AecliError(
                    f"the exported {function} disagrees with ae: {name} differs by {diff:.3g} on a check batch "
                    f"of shape {batch.shape} (a fault of the exporter; please report it)"
                )
            diffs[name] = max(diffs.get(name, 0.0), diff)
    return diffs


def reference(function: str, file: Any, batch: np.ndarray) -> dict[str, np.ndarray]:
    """What ae's own code makes of a batch: the functions `ae encode`, `ae decode`, `ae denoise`
    (with --whole for bottleneck models) and `ae score` call, on the same uint8 pixels."""
    from aecli import infer
    from aecli.data import ImageSet
    from aecli.data.arrays import ArrayImages
    from aecli.scoring import maps, scores

    loaded = infer.Loaded(file, torch.device("cpu"))
    caps = file.model.capabilities
    if function == "decode":
        images = torch.cat(list(infer.decode(loaded, batch)))
        return {"image": images.permute(0, 2, 3, 1).numpy()}
    images = ImageSet([ArrayImages("check", batch, True)], "check batch")
    if function == "encode":
        return {"latent": infer.encode(loaded, images, workers=0).vectors}
    if function in ("denoise", "reconstruct"):
        done = infer.denoise(loaded, images, whole=not caps.any_size, workers=0)
        return {"image": torch.stack([d.clean for d in done]).permute(0, 2, 3, 1).numpy()}
    values = scores.score(loaded, images, workers=0, tiles=False).values
    fitted, recon = [], []
    for part, _, reconstruction in scores.score_batches(loaded, images, workers=0, tiles=False):
        fitted.append(part.pixels)
        recon.append(reconstruction)
    x, r = torch.cat(fitted), torch.cat(recon)
    return {
        **values,
        "map": torch.stack([maps.anomaly_map(loaded, a, b) for a, b in zip(x, r)]).numpy(),
        "reconstruction": r.permute(0, 2, 3, 1).numpy(),
        "fitted": x.permute(0, 2, 3, 1).numpy(),
    }
