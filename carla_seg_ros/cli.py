"""`carla-seg`: the non-ROS tools (training, evaluation, export, engines, bags, benchmarks, demo).

Each subcommand lives in its own module with a ``main(argv)``; `carla-seg CMD --help` shows its options.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("carla_seg_ros.learning.train", "train a segmentation network"),
    "self-train": ("carla_seg_ros.learning.self_train",
                   "adapt a trained model to unlabelled frames (mean teacher, pseudo-labels, boxes)"),
    "evaluate": ("carla_seg_ros.evaluation.evaluate", "metrics of a model on a dataset split"),
    "evaluate-boxes": ("carla_seg_ros.evaluation.box_eval",
                       "box scores on unlabelled frames: vehicle box recall, Car precision, per group"),
    "compare-folds": ("carla_seg_ros.evaluation.fold_compare",
                      "does a new recipe's fold table beat the base's (mean up, no fold down badly)?"),
    "rescore-folds": ("carla_seg_ros.learning.fold_rescore",
                      "score a `self-train --cv` run's fold models again: mixed with their start, at another height"),
    "mix-weights": ("carla_seg_ros.learning.weight_mix",
                    "a * ADAPTED + (1 - a) * BASE weights: trade a new domain against the labelled one"),
    "export": ("carla_seg_ros.learning.export", "trained weights -> ONNX with a parity check"),
    "adapt": ("carla_seg_ros.learning.adapt",
              "adapt the model to your frames in one command: record or read, fine-tune, before/after, install"),
    "models": ("carla_seg_ros.runtime.user_models", "list the installed user models (carla-seg adapt) and metrics"),
    "quantize": ("carla_seg_ros.learning.quantize",
                 "fp32 ONNX -> int8 ONNX for the CPU runtimes, with an accuracy check"),
    "build-engine": ("carla_seg_ros.runtime.tensorrt.engine_builder", "ONNX -> TensorRT engine (cached)"),
    "make-bag": ("carla_seg_ros.evaluation.bag_make", "image/label folder -> CARLA-style rosbag2"),
    "bag-to-dataset": ("carla_seg_ros.capture.bag_to_dataset",
                       "rosbag2 of RGB + semantic cameras -> dataset folder (rgb/, label/, manifest.csv)"),
    "record": ("carla_seg_ros.ros.recorder_node",
               "record RGB + semantic camera topics over ROS 2 into a dataset folder"),
    "bag-eval": ("carla_seg_ros.evaluation.bag_eval", "evaluate the model on a rosbag2 with ground truth"),
    "bench": ("carla_seg_ros.benchmarks.bench",
              "benchmarks: `bench model|node|cameras|gpu|transport|soak|fuzz|record|map|swap`"),
    "demo": ("carla_seg_ros.tools.demo", "run seg_node on the CARLA frames over ROS 2 and write out/demo"),
    "carla": ("carla_seg_ros.simulator.carla_client",
              "drive a CARLA 0.9.16 server: ego vehicle + matching RGB/semantic cameras, synchronous, ROS 2 "
              "topics; --record DIR writes a dataset"),
}


def usage() -> str:
    lines = ["usage: carla-seg COMMAND [options]   (carla-seg COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<15} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"carla-seg: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
