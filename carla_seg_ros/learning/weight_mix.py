"""`carla-seg mix-weights`: a linear mix of two weight files of one network, w = a * ADAPTED + (1 - a) * BASE.

Self-training on modern-CARLA frames moves the network away from the labelled 2018 drive: it finds more vehicles on
the new frames and loses some of the labelled domain (val Car F2 above all). Both files share one starting point
(ADAPTED was trained from BASE), so the straight line between them stays in one basin and its points trade the two
domains smoothly (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"). ``--alpha`` picks the
point: 1 is ADAPTED, 0 is BASE. Choose it on val and on folds of unseen stretches, never on test.

    carla-seg mix-weights runs/v4/student.safetensors v2.safetensors --alpha 0.5 --out runs/v4/mixed.safetensors

Floating-point tensors (weights and BatchNorm statistics) are mixed; integer ones (BatchNorm's batch counter) come
from ADAPTED. The two files must have the same model config and tensors; the output records both sources and a.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from carla_seg_ros.networks.weights import read_metadata, save_state


def mix_state(adapted: dict, base: dict, alpha: float) -> dict:
    """a * adapted + (1 - a) * base on the floating-point tensors; ValueError when the two differ in names or shapes."""
    if adapted.keys() != base.keys():
        only = sorted(adapted.keys() ^ base.keys())[:3]
        raise ValueError(f"the two files hold different tensors (e.g. {', '.join(only)})")
    out = {}
    for name, a in adapted.items():
        b = base[name]
        if a.shape != b.shape:
            raise ValueError(f"tensor {name}: shape {tuple(a.shape)} against {tuple(b.shape)}")
        out[name] = (alpha * a.float() + (1 - alpha) * b.float()).to(a.dtype) if a.is_floating_point() else a.clone()
    return out


def mix_share(text: str) -> float:
    """argparse type of --alpha: a share in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg mix-weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapted", type=Path, help="weights trained from BASE (.safetensors), e.g. a self-train student")
    p.add_argument("base", type=Path, help="the weights ADAPTED started from (.safetensors)")
    p.add_argument("--alpha", type=mix_share, required=True, help="share of ADAPTED, in [0, 1]")
    p.add_argument("--out", type=Path, required=True, help=".safetensors file to write")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        metas = [read_metadata(path) for path in (args.adapted, args.base)]
        if metas[0].get("model_config") != metas[1].get("model_config"):
            raise ValueError("the two files are of different networks (model_config differs)")
        mixed = mix_state(load_file(str(args.adapted)), load_file(str(args.base)), args.alpha)
        run_info = {**metas[0].get("run_info", {}),
                    "mixed": {"adapted": str(args.adapted), "base": str(args.base), "alpha": args.alpha}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_state(mixed, metas[0]["model_config"], args.out, run_info)
    except (OSError, ValueError, json.JSONDecodeError, SafetensorError) as exc:      # bad file, full disk
        print(f"carla-seg mix-weights: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {args.alpha} x {args.adapted.name} + {1 - args.alpha:g} x {args.base.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
