"""`carla-seg export`: trained weights -> ONNX (uint8 image in, class ids + confidence out) with a parity check.

    carla-seg export --weights runs/fast_unet/final.safetensors --out models/carla_unet.onnx

The graph contains the normalisation, softmax and argmax (see models.DeployModel), and the ONNX metadata holds the
class table, input size and normalisation, so a runtime needs nothing but the .onnx file. The weights are copied
beside it (same stem, .safetensors) for the PyTorch backends.

Input policy (``--input-policy``, runtime/input_size.py): ``keep_aspect`` (default) exports a graph whose width axis
is dynamic (height fixed at the model's, batch dynamic) and states in the metadata that frames run at their own
aspect: widths from the model's own (4:3) to the 8:3 width (768 at height 288; ``--max-aspect``), multiples of 32.
``fixed`` exports the model's size only, every frame squashed to it (what every export before keep_aspect did).
The parity check then runs at the model's width and at the 16:9 and largest widths too.

Model ladder (runtime/model_ladder.py): ``--rung fast`` / ``--rung large`` write ``models/carla_unet_fast.onnx`` /
``carla_unet_large.onnx`` (rungs seg_node's ``model: auto`` considers) unless ``--out`` says otherwise;
``--input-height 384`` exports the weights at another input height (the width follows at 4:3, a multiple of 32), so
one set of weights makes every rung (v4: 384, 288 and 256). The network is
fully convolutional, so any multiple of 32 runs; accuracy at a height it was not trained at is the weights' own
matter, and the parity check (ONNX Runtime against PyTorch, at that height) still guards the export itself.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from carla_seg_ros import classes
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.input_size import (FIXED, KEEP_ASPECT, MAX_ASPECT, POLICIES, check_policy,
                                              keep_aspect_fields, width_for_aspect, width_range)
from carla_seg_ros.runtime.model_info import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, ModelInfo
from carla_seg_ros.runtime.model_ladder import RUNG_FILES, RUNGS
from carla_seg_ros.networks.models import DeployModel, input_normalisation, normalize_uint8
from carla_seg_ros.paths import default_data_dir
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.networks.weights import load_model

OPSET = 17
PARITY_MIN = 0.999


def model_info_from_weights(meta: dict, net: torch.nn.Module, input_policy: str = KEEP_ASPECT,
                            max_aspect: float = MAX_ASPECT, input_height: int | None = None) -> ModelInfo:
    """The metadata of the export. keep_aspect needs a model size in multiples of 32 (the network's stride, at which
    every width of the range gives the same padding and skip shapes); a model of another size is exported fixed.
    ``input_height``: export at this height instead of the trained one, the width following at 4:3."""
    run = meta.get("run_info", {})
    w, h = run.get("input_size", [384, 288])
    if input_height is not None:
        w, h = width_for_aspect(int(input_height), 4 / 3), int(input_height)
    policy = {}
    if input_policy == KEEP_ASPECT:
        if int(w) % 32 or int(h) % 32:
            print(f"input size {w}x{h} is not a multiple of 32: exported with input_policy fixed", file=sys.stderr)
        else:
            policy = keep_aspect_fields(int(w), int(h), max_aspect)
    training = {k: run["args"][k] for k in ("preset", "epochs", "seed", "lr", "encoder_lr", "crop", "loss",
                                             "train_splits", "init", "data") if k in run.get("args", {})}
    mean, std = input_normalisation(net)  # the network's own (pretrained encoders) or the dataset's
    class_set = run.get("class_set", classes.DEFAULT_CLASS_SET)
    table = run.get("classes") or classes.class_table(class_set)
    if len(table) != meta["model_config"].get("num_classes", len(table)):
        raise ValueError(f"class table of {len(table)} classes for a network of "
                         f"{meta['model_config']['num_classes']} outputs")
    return ModelInfo(input_width=int(w), input_height=int(h), classes=table, mean=list(mean),
                     std=list(std), hood_mode=run.get("hood_mode", "background"),
                     hood_row_fraction=float(run.get("hood_row_fraction", 495 / 600)),
                     arch=meta["model_config"]["arch"], training=training, class_set=class_set,
                     tag_maps=run.get("tag_maps") or classes.tag_maps(class_set), **policy)


def export_onnx(net: torch.nn.Module, info: ModelInfo, out: Path) -> None:
    import onnx
    check_policy(info)
    deploy = DeployModel(net).eval()
    dummy = torch.zeros(1, info.input_height, info.input_width, 3, dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Batch always dynamic; keep_aspect: the width too (NHWC input axis 2, (N, H, W) output axis 2).
    image_axes = {0: "batch", 2: "width"} if info.input_policy == KEEP_ASPECT else {0: "batch"}
    mask_axes = {0: "batch", 2: "width"} if info.input_policy == KEEP_ASPECT else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, dummy, str(out), opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes={INPUT_NAME: image_axes,
                                                                         OUTPUT_NAMES[0]: mask_axes,
                                                                         OUTPUT_NAMES[1]: mask_axes},
                          dynamo=False)
    model = onnx.load(str(out))
    model.producer_name = "carla_seg_ros"
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def parity(net: torch.nn.Module, onnx_path: Path, images: np.ndarray) -> float:
    """Fraction of pixels where ONNX Runtime's class id equals PyTorch's argmax."""
    from carla_seg_ros.runtime.backends import create_backend
    backend = create_backend("onnxruntime", onnx_path)
    agree = total = 0
    with torch.no_grad():
        for i in range(0, len(images), 8):
            batch = images[i:i + 8]
            ref = net(normalize_uint8(torch.from_numpy(batch), *input_normalisation(net))).argmax(1).numpy()
            ids, _ = backend.infer(batch)
            agree += int((ids == ref).sum())
            total += ref.size
    return agree / total


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="trained .safetensors from carla-seg train")
    p.add_argument("--out", type=Path, default=None,
                   help="ONNX file to write (default: models/carla_unet.onnx, or the --rung's file)")
    p.add_argument("--rung", choices=RUNGS, default=None,
                   help="model ladder rung this export is (runtime/model_ladder.py): sets the default --out to "
                        "models/" + ", models/".join(RUNG_FILES.values()) + " respectively")
    p.add_argument("--input-height", type=int, default=None, metavar="H",
                   help="export at this input height (a multiple of 32 for keep_aspect; width 4:3) instead of the "
                        "trained size, e.g. 224 for a fast rung")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="dataset for the parity check")
    p.add_argument("--split", default="val", help="split for the parity check (default: %(default)s)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--input-policy", choices=POLICIES, default=KEEP_ASPECT,
                   help="keep_aspect: dynamic width, frames run at their own aspect (default); fixed: the model's "
                        "size only, every frame squashed to it")
    p.add_argument("--max-aspect", type=float, default=MAX_ASPECT,
                   help="keep_aspect: widest aspect run as it is (default: 8:3, 768 at height 288)")
    return p


def parity_widths(info: ModelInfo) -> list[int]:
    """The widths the parity check runs at: the model's own and, for keep_aspect, 16:9 and the largest."""
    if info.input_policy != KEEP_ASPECT:
        return [info.input_width]
    lo, hi = width_range(info)
    wide = min(max(width_for_aspect(info.input_height, 16 / 9, info.width_multiple), lo), hi)
    return list(dict.fromkeys([info.input_width, wide, hi]))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input_height is not None and args.input_height < 32:
        parser.error("--input-height must be >= 32")
    if args.out is None:
        args.out = Path("models") / RUNG_FILES[args.rung or "accurate"]
    net, meta = load_model(args.weights)
    info = model_info_from_weights(meta, net, args.input_policy, args.max_aspect, args.input_height)
    export_onnx(net, info, args.out)
    weights_copy = args.out.with_suffix(".safetensors")
    if args.weights.resolve() != weights_copy.resolve():
        shutil.copyfile(args.weights, weights_copy)
    lo, hi = width_range(info)
    shape = f"{info.input_width}x{info.input_height}" if info.input_policy == FIXED else \
        f"{lo}..{hi}x{info.input_height} (keep_aspect, widths in steps of {info.width_multiple})"
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, opset {OPSET}, input {shape}) and "
          f"{weights_copy}")
    if args.no_parity:
        return 0
    if args.data is None:
        print("parity check needs --data (no dataset found)", file=sys.stderr)
        return 2
    pairs = find_pairs(args.data, args.split)
    frames = [read_rgb(p.rgb) for p in pairs]
    ok = True
    for width in parity_widths(info):
        images = np.stack([resize_image(f, (width, info.input_height)) for f in frames])
        agreement = parity(net, args.out, images)
        ok &= agreement >= PARITY_MIN
        print(f"parity on {args.split} ({len(pairs)} frames) at {width}x{info.input_height}: argmax agreement "
              f"{agreement * 100:.4f} % (required >= {PARITY_MIN * 100:.1f} %) -> "
              f"{'OK' if agreement >= PARITY_MIN else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
