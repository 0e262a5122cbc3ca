"""`carla-seg bench model|node|cameras|gpu|transport|soak|fuzz|record|map|swap`: benchmarks that print their
figures, with baselines measured in the same run."""
from __future__ import annotations

import importlib
import sys

TARGETS = {"model": "carla_seg_ros.benchmarks.bench_model", "node": "carla_seg_ros.benchmarks.bench_node",
           "cameras": "carla_seg_ros.benchmarks.bench_cameras",
           "gpu": "carla_seg_ros.benchmarks.bench_gpu", "transport": "carla_seg_ros.benchmarks.bench_transport",
           "soak": "carla_seg_ros.benchmarks.bench_soak", "fuzz": "carla_seg_ros.benchmarks.bench_fuzz",
           "record": "carla_seg_ros.benchmarks.bench_record", "map": "carla_seg_ros.benchmarks.bench_map",
           "swap": "carla_seg_ros.benchmarks.bench_swap"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TARGETS:
        print(f"usage: carla-seg bench {{{','.join(TARGETS)}}} [options]   (carla-seg bench model --help)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return int(importlib.import_module(TARGETS[argv[0]]).main(argv[1:]) or 0)
