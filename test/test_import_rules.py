"""Layering of the package: which subpackage may import which, read from the modules' own imports (an ast walk).

The folders follow the data flow (message -> pixels -> model -> mask -> outputs / metrics):

* shared (classes, paths, datasets, unlabelled, image_codec): the vocabulary every stage uses; imports no subpackage;
* networks/: the PyTorch network definitions, their input normalisation and safetensors weights; shared only;
* runtime/: preprocessing, model metadata, the inference backends and the TensorRT engine tooling; shared, and
  networks (only the two PyTorch backends, which run the network itself, inside their constructors);
* evaluation/: metrics, folder and bag evaluation, reports, and the bag and ground-truth readers they share with
  capture; shared and runtime;
* capture/: pairing RGB and semantic frames from topics or bags into dataset folders (recording, dataset writing,
  bag-to-dataset); shared, runtime and evaluation (its bag and ground-truth readers);
* learning/: training, export, quantisation; shared, networks, runtime and evaluation;
* ros/: the nodes and the playback helpers; shared, runtime, evaluation and capture, never learning or networks (so
  the node does not pull in the training stack or PyTorch) and never the rooms above it;
* simulator/: the CARLA client (`carla-seg carla`); shared, runtime, evaluation and capture, never ROS modules of ours
  (it speaks rclpy itself, so it runs without the node's stack);
* benchmarks/: `carla-seg bench ...`; everything below the user commands;
* tools/ (the demo) and the `carla-seg` dispatcher: anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "carla_seg_ros"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
SHARED = {"classes", "paths", "datasets", "image_codec", "unlabelled"}
ALLOWED = {
    "shared": {"shared"},
    "networks": {"shared", "networks"},
    "runtime": {"shared", "networks", "runtime"},
    "evaluation": {"shared", "runtime", "evaluation"},
    "capture": {"shared", "runtime", "evaluation", "capture"},
    "learning": {"shared", "networks", "runtime", "evaluation", "learning"},
    "ros": {"shared", "runtime", "evaluation", "capture", "ros"},
    "simulator": {"shared", "runtime", "evaluation", "capture", "simulator"},
    "benchmarks": {"shared", "networks", "runtime", "evaluation", "capture", "learning", "ros", "simulator",
                   "benchmarks"},
    "tools": {"shared", "networks", "runtime", "evaluation", "capture", "learning", "ros", "simulator", "benchmarks",
              "tools"},
    "entry": {"shared", "networks", "runtime", "evaluation", "capture", "learning", "ros", "simulator", "benchmarks",
              "tools", "entry"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer_of(module: str) -> str:
    top = module.split(".")[0] if module else ""
    if top in SHARED:
        return "shared"
    if top in ("cli", "__main__", ""):
        return "entry"
    return top


def imported_modules(source: str, module: str, is_package: bool, top_level_only: bool = False) -> set[str]:
    """Package-internal modules that ``source`` imports (dotted, without the package prefix)."""
    found = set()
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            candidates = [[a.name] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            # `from X import a`: the module X.a when a is a module of ours, else X itself
            candidates = [[f"{prefix}.{a.name}", prefix] for a in node.names]
        else:
            continue
        for options in candidates:
            for name in options:
                dotted = name[len(PACKAGE) + 1:] if name.startswith(PACKAGE + ".") else None
                if dotted in ALL_MODULES:
                    found.add(dotted)
                    break
    return found


def violations(module: str, imports: set[str]) -> list[str]:
    layer = layer_of(module)
    bad = []
    for target in sorted(imports):
        if layer_of(target) not in ALLOWED[layer]:
            bad.append(f"{module} ({layer}) imports {target} ({layer_of(target)})")
    return bad


SOURCES = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
ALL_MODULES = set(SOURCES)


def test_every_module_belongs_to_a_known_layer():
    unknown = sorted(m for m in ALL_MODULES if layer_of(m) not in ALLOWED)
    assert not unknown, f"modules outside the documented layers: {unknown}"


def test_imports_follow_the_layering_rules():
    bad = []
    for module, path in sorted(SOURCES.items()):
        imports = imported_modules(path.read_text(), module, path.name == "__init__.py")
        bad += violations(module, imports)
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_imports_have_no_cycle():
    # Function-local imports count too: a cycle through them still ties the modules into one unit that cannot be
    # read, tested or loaded alone (the backend registry, the TensorRT backend and the engine builder once did).
    graph = {}
    for module, path in SOURCES.items():
        graph[module] = imported_modules(path.read_text(), module, path.name == "__init__.py") - {module}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("module, source, expected", [
    ("ros.seg_node", "from carla_seg_ros.learning.train import main", ["ros.seg_node (ros) imports learning.train"]),
    ("ros.seg_node", "import carla_seg_ros.tools.demo", ["ros.seg_node (ros) imports tools.demo"]),
    ("learning.train", "def f():\n    from carla_seg_ros.ros import seg_node", ["learning.train (learning) imports"]),
    ("evaluation.metrics", "from ..learning import models", ["evaluation.metrics (evaluation) imports"]),
    ("runtime.preprocess", "from carla_seg_ros.evaluation.metrics import x", ["runtime.preprocess (runtime)"]),
    ("classes", "from carla_seg_ros.runtime import preprocess", ["classes (shared) imports runtime.preprocess"]),
    ("ros.seg_node", "from carla_seg_ros.runtime.backends import create_backend", []),
    ("runtime.backends.torch_backend", "from carla_seg_ros.networks.models import DeployModel", []),
    ("ros.seg_node", "from carla_seg_ros.networks.models import DeployModel", ["ros.seg_node (ros) imports"]),
    ("networks.models", "from carla_seg_ros.runtime.preprocess import resize_image", ["networks.models (networks)"]),
    ("evaluation.bag_eval", "from carla_seg_ros.capture.recording import x", ["evaluation.bag_eval (evaluation)"]),
    ("ros.recorder_node", "from carla_seg_ros.capture.recording import x", []),
    ("simulator.carla_client", "from carla_seg_ros.ros.seg_node import x", ["simulator.carla_client (simulator)"]),
    ("ros.seg_node", "from carla_seg_ros.benchmarks.bench_node import x", ["ros.seg_node (ros) imports"]),
])
def test_checker_flags_forbidden_imports(module, source, expected):
    """The rule check itself must be able to fail: synthetic sources with forbidden imports are reported."""
    found = violations(module, imported_modules(source, module, is_package=False))
    assert len(found) == len(expected)
    for line, start in zip(found, expected):
        assert line.startswith(start)


MAX_MODULE_LINES = 450


def test_no_module_is_longer_than_one_job_needs():
    # A module past this has always held two jobs (a loop and its data, a node and its model choice): split it by
    # job, never by line count.
    long = {m: n for m, p in SOURCES.items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
