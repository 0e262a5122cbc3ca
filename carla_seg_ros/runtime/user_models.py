"""`carla-seg models`: the user's own models (`carla-seg adapt` installs them), found by name.

A user model is a folder ``<models dir>/<name>/`` holding

* ``model.onnx``  the exported model (metadata: class table, input policy, tag maps: runtime/model_info.py);
* ``model.json``  what it is: the model it started from, the data, the command, the before/after metrics;
* ``CARD.md``     a model card stub written from the same record, for a human to complete.

The models dir is, first that is set: an explicit folder (``--models-dir``, seg_node's ``user_models_dir``),
``$CARLA_SEG_MODELS``, ``$XDG_DATA_HOME/carla_seg_ros/models``, ``~/.local/share/carla_seg_ros/models`` (the XDG
default). It lives outside the package, so a reinstall or a colcon rebuild never loses a user's models.

``resolve_model`` turns seg_node's ``model`` parameter into a file: an existing path wins; otherwise a valid name
of an installed model. Installation writes into a temporary sibling folder and renames it into place, so a model
folder is either complete or absent (a node swapping to it never reads half a file).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV_DIR = "CARLA_SEG_MODELS"
MODEL_FILE = "model.onnx"
RECORD_FILE = "model.json"
CARD_FILE = "CARD.md"
# Names become folder names and ROS parameter values: letters, digits, '.', '_', '-', no path separators.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def user_models_dir(override: str | Path | None = None) -> Path:
    """The folder of the user's models (see the module docstring for the order)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "carla_seg_ros" / "models"


def check_name(name: str) -> str:
    """``name`` if it can name a user model, else ValueError saying why."""
    if not NAME_PATTERN.match(name or "") or name in (".", ".."):
        raise ValueError(f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
                         "or digit)")
    return name


@dataclass(frozen=True)
class UserModel:
    name: str
    folder: Path
    record: dict

    @property
    def path(self) -> Path:
        return self.folder / MODEL_FILE


def install(onnx: Path, name: str, record: dict, card: str, directory: str | Path | None = None,
            replace: bool = False) -> UserModel:
    """Copy ``onnx`` with its record and card into ``<dir>/<name>/`` (atomic rename); returns the installed model.
    FileExistsError if the name is taken and ``replace`` is off."""
    check_name(name)
    root = user_models_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if target.exists() and not replace:
        raise FileExistsError(f"a model named {name!r} is already installed in {root} (choose another --name, or "
                              "--replace)")
    staging = root / f".{name}.installing.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        shutil.copyfile(onnx, staging / MODEL_FILE)
        record = dict(record, name=name, installed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=1))
        (staging / CARD_FILE).write_text(card)
        if target.exists():
            old = root / f".{name}.old.{os.getpid()}"
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return UserModel(name, target, record)


def installed(directory: str | Path | None = None) -> list[UserModel]:
    """The complete models in the models dir, by name (folders without a model file are left out)."""
    root = user_models_dir(directory)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / MODEL_FILE).is_file():
            continue
        try:
            record = json.loads((folder / RECORD_FILE).read_text())
        except (OSError, ValueError):
            record = {}
        out.append(UserModel(folder.name, folder, record))
    return out


def resolve_model(spec: str, directory: str | Path | None = None) -> Path | None:
    """The model file ``spec`` names: an existing file path, else an installed model's name; None if neither."""
    if not spec:
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if NAME_PATTERN.match(spec):
        candidate = user_models_dir(directory) / spec / MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def _metric(record: dict, part: str, which: str, key: str = "miou"):
    value = (((record.get("metrics") or {}).get(part) or {}).get(which) or {}).get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def format_table(models: list[UserModel]) -> str:
    """One row per model: its name, class set, held-out mIoU before -> after, keep-data mIoU, start model."""
    header = ("name", "classes", "held-out mIoU before -> after", "keep-data before -> after", "started from",
              "installed")
    rows = [header]
    for m in models:
        r = m.record
        rows.append((m.name, r.get("class_set", "-"),
                     f"{_metric(r, 'held_out', 'before')} -> {_metric(r, 'held_out', 'after')}",
                     f"{_metric(r, 'keep', 'before')} -> {_metric(r, 'keep', 'after')}",
                     Path(str(r.get("start_model", "-"))).name, str(r.get("installed", "-"))[:19]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path,
                   help=f"the user models folder (default: ${ENV_DIR}, else $XDG_DATA_HOME/carla_seg_ros/models)")
    p.add_argument("--json", action="store_true", help="print the records as JSON instead of a table")
    p.add_argument("--path", metavar="NAME", help="print the model file of NAME and exit (1 if not installed)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    root = user_models_dir(args.models_dir)
    if args.path:
        found = resolve_model(args.path, args.models_dir)
        if found is None:
            print(f"carla-seg models: no model {args.path!r} in {root}", file=sys.stderr)
            return 1
        print(found)
        return 0
    models = installed(args.models_dir)
    if args.json:
        print(json.dumps([dict(m.record, name=m.name, path=str(m.path)) for m in models], indent=1))
        return 0
    if not models:
        print(f"no user models in {root} (carla-seg adapt installs them)")
        return 0
    print(f"user models in {root}:")
    print(format_table(models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
