"""`carla-seg export`: trained weights -> ONNX (uint8 image in, class ids + confidence out) with a parity check.

    carla-seg export --weights runs/fast_unet/final.safetensors --out models/carla_unet.onnx

The graph contains the normalisation, softmax and argmax (see models.DeployModel), and the ONNX metadata holds the
class table, input size and normalisation, so a runtime needs nothing but the .onnx file. The weights are copied
beside it (same stem, .safetensors) for the PyTorch backends.
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
from carla_seg_ros.runtime.model_info import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, ModelInfo
from carla_seg_ros.networks.models import DeployModel, input_normalisation, normalize_uint8
from carla_seg_ros.paths import default_data_dir
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.networks.weights import load_model

OPSET = 17
PARITY_MIN = 0.999


def model_info_from_weights(meta: dict, net: torch.nn.Module) -> ModelInfo:
    run = meta.get("run_info", {})
    w, h = run.get("input_size", [384, 288])
    training = {k: run["args"][k] for k in ("preset", "epochs", "seed", "lr", "encoder_lr", "crop", "loss",
                                             "train_splits") if k in run.get("args", {})}
    mean, std = input_normalisation(net)  # the network's own (pretrained encoders) or the dataset's
    return ModelInfo(input_width=int(w), input_height=int(h), classes=classes.class_table(), mean=list(mean),
                     std=list(std), hood_mode=run.get("hood_mode", "background"),
                     hood_row_fraction=float(run.get("hood_row_fraction", 495 / 600)),
                     arch=meta["model_config"]["arch"], training=training)


def export_onnx(net: torch.nn.Module, info: ModelInfo, out: Path) -> None:
    import onnx
    deploy = DeployModel(net).eval()
    dummy = torch.zeros(1, info.input_height, info.input_width, 3, dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, dummy, str(out), opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes={INPUT_NAME: {0: "batch"},
                                                                         OUTPUT_NAMES[0]: {0: "batch"},
                                                                         OUTPUT_NAMES[1]: {0: "batch"}},
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
    p.add_argument("--out", type=Path, default=Path("models/carla_unet.onnx"), help="ONNX file to write")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="dataset for the parity check")
    p.add_argument("--split", default="val", help="split for the parity check (default: %(default)s)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    net, meta = load_model(args.weights)
    info = model_info_from_weights(meta, net)
    export_onnx(net, info, args.out)
    weights_copy = args.out.with_suffix(".safetensors")
    if args.weights.resolve() != weights_copy.resolve():
        shutil.copyfile(args.weights, weights_copy)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, opset {OPSET}, input "
          f"{info.input_width}x{info.input_height}) and {weights_copy}")
    if args.no_parity:
        return 0
    if args.data is None:
        print("parity check needs --data (no dataset found)", file=sys.stderr)
        return 2
    pairs = find_pairs(args.data, args.split)
    images = np.stack([resize_image(read_rgb(p.rgb), info.input_size) for p in pairs])
    agreement = parity(net, args.out, images)
    ok = agreement >= PARITY_MIN
    print(f"parity on {args.split} ({len(pairs)} frames): argmax agreement {agreement * 100:.4f} % "
          f"(required >= {PARITY_MIN * 100:.1f} %) -> {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
