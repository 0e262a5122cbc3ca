"""`carla-seg adapt`: adapt the model to your town in one command, and show before/after on your own frames.

Examples:
    carla-seg adapt --carla localhost:2000 --towns Town03 --frames-per-town 3000 --every 5 --max-frames 2000 \
        --out runs/adapt_town03 --name town03
    carla-seg adapt --bag drive1 --bag drive2 --out runs/adapt_bags --name mytown --swap /seg_node
    carla-seg adapt --data runs/rec/mytowns --keep-data ../shared/data/carla_seg --out runs/adapt --name mytowns
    carla-seg adapt --unlabelled ../shared/data/carla_unlabelled --steps 500 --out runs/adapt_u --name rainy

One source (--carla, --bag, --data or --unlabelled), then these stages, each one the command a user could run by
hand, each leaving a marker in OUT/stages/ so that a run stopped with Ctrl-C continues where it stopped when the
same command is given again:

1. frames: record from the server (`carla --record`), read the bags (`bag-to-dataset`), or take the folder;
2. split: in time, a fine-tune part, a guard band and a held-out stretch at the end (learning/adapt_split.py), or
   --eval-data as the held-out frames; --keep-data frames of an old domain are mixed in and scored too;
3. before: the start model scored on the held-out frames (mIoU, pixel accuracy, per-class IoU; box recall for
   unlabelled frames with boxes);
4. train: `carla-seg train --init START --preset finetune` (labelled), or `carla-seg self-train` (unlabelled);
   --nproc-per-node N runs it under torchrun (DistributedDataParallel);
5. export: `carla-seg export` (keep_aspect, parity-checked against PyTorch);
6. after, report: the adapted model on the same frames; OUT/report.html (table, overlays side by side) and a
   short summary;
7. install: into the user models folder under --name (runtime/user_models.py), with a model card stub;
   --engine builds its TensorRT engine; --swap NODE sets the running seg_node's model to it.
"""
from __future__ import annotations

import argparse
import errno
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from carla_seg_ros import classes
from carla_seg_ros.learning import adapt_sources as sources
from carla_seg_ros.learning.adapt_card import card_text, load_samples, save_samples
from carla_seg_ros.learning.adapt_split import (DEFAULT_GUARD, DEFAULT_HELD_OUT, MIN_FRAMES, TooFewFrames, keep_parts,
                                                ordered_pairs, split_in_time, thin, write_prepared)
from carla_seg_ros.paths import default_data_dir, models_dir
from carla_seg_ros.runtime import user_models

PROG = "carla-seg adapt"
MIN_FREE_BYTES = 300 * 2**20      # frames, checkpoints and the ONNX of a small run; checked before starting


class AdaptError(RuntimeError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder; the same folder again resumes")
    src = p.add_argument_group("source (exactly one)").add_mutually_exclusive_group(required=True)
    src.add_argument("--carla", metavar="HOST[:PORT]", help="record from a running CARLA server")
    src.add_argument("--bag", type=Path, action="append", help="bridge bag with RGB + semantic topics (repeatable)")
    src.add_argument("--data", type=Path, help="a recorded folder (rgb/ label/ manifest.csv)")
    src.add_argument("--unlabelled", type=Path, metavar="BAG|DIR", help="RGB only (rgb/ [+ boxes.csv], or a bag): "
                     "self-training, scored by box recall")
    rec = p.add_argument_group("recording (--carla: the options of carla-seg carla --record)")
    rec.add_argument("--towns", help="maps to record in turn, e.g. Town03,Town10HD_Opt")
    rec.add_argument("--weathers", help="weather presets, e.g. ClearNoon,WetSunset")
    rec.add_argument("--frames", type=int, help="ticks to run")
    rec.add_argument("--frames-per-town", type=int, help="ticks per town and weather")
    rec.add_argument("--every", type=int, help="keep every Nth pair (also for --bag)")
    rec.add_argument("--min-change", type=float, help="skip pairs that changed less (grey levels)")
    rec.add_argument("--max-frames", type=int, default=2000, help="stop after this many frames")
    bag = p.add_argument_group("bags")
    bag.add_argument("--rgb-topic", help="camera topic (default: found)")
    bag.add_argument("--gt-topic", help="semantic topic (default: found)")
    bag.add_argument("--boxes", type=Path, help="--unlabelled BAG: boxes.csv for the frames "
                     "named bag_000000.png, ... in stamp order")
    bag.add_argument("--coding", choices=("auto",) + classes.CODINGS, default="auto",
                     help="ground truth coding (auto: bag metadata, palette)")
    ev = p.add_argument_group("before / after")
    ev.add_argument("--held-out", type=float, default=DEFAULT_HELD_OUT,
                    help="fraction held out at the end (default: %(default)s)")
    ev.add_argument("--guard-frames", type=int, default=DEFAULT_GUARD,
                    help="frames dropped before the held-out stretch")
    ev.add_argument("--eval-data", type=Path, help="score on this labelled folder instead")
    ev.add_argument("--keep-data", type=Path, help="old-domain folder: mixed in, its val frames "
                    "scored as a forgetting guard")
    ev.add_argument("--keep-ratio", type=float, default=0.5,
                    help="old frames per fine-tune frame")
    ev.add_argument("--min-frames", type=int, default=MIN_FRAMES, help="fewest labelled frames")
    ev.add_argument("--samples", type=int, default=4, help="overlays in the report")
    tr = p.add_argument_group("training")
    tr.add_argument("--start-model", type=Path, default=models_dir() / "carla_unet.safetensors",
                    help="weights to start from (its .onnx beside it, if any, "
                    "is the 'before')")
    tr.add_argument("--classes", dest="class_set", choices=classes.class_set_names(),
                    help="class set (default: the start model's)")
    tr.add_argument("--epochs", type=int, default=2,
                    help="labelled: epochs")
    tr.add_argument("--steps", type=int, help="labelled: max steps; unlabelled: steps (500)")
    tr.add_argument("--batch-size", type=int, help="global batch (default: the recipe's)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    tr.add_argument("--nproc-per-node", type=int, default=1, help="training processes (torchrun)")
    sh = p.add_argument_group("shipping")
    sh.add_argument("--name", help="install name (default: the --out folder's)")
    sh.add_argument("--models-dir", type=Path, help="user models folder (carla-seg models)")
    sh.add_argument("--replace", action="store_true", help="replace a model of that name")
    sh.add_argument("--no-install", dest="install", action="store_false", help="stop after the report")
    sh.add_argument("--engine", action="store_true", help="build the TensorRT engine (GPU)")
    sh.add_argument("--swap", metavar="NODE", help="swap the running node to it, e.g. /seg_node")
    return p


# ---------------------------------------------------------------------------------------------------------------
# stage markers: OUT/stages/<stage>.json, written when a stage has finished
# ---------------------------------------------------------------------------------------------------------------
class Stages:
    def __init__(self, out: Path):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> dict | None:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def run(self, name: str, work) -> dict:
        """The stage's record: from its marker when it finished before, else from ``work()`` (then marked)."""
        done = self.get(name)
        if done is not None:
            print(f"[{name}] done before (resumed)")
            return done
        print(f"[{name}] ...", flush=True)
        record = work()
        (self.dir / f"{name}.json").write_text(json.dumps(record, indent=1))
        return record


def source_key(args) -> dict:
    """What a run folder was made from: a second run into the same folder must name the same source."""
    return {k: str(getattr(args, k)) for k in ("carla", "bag", "data", "unlabelled", "eval_data", "keep_data",
                                               "start_model", "class_set")}


# ---------------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------------
def frames_stage(args) -> dict:
    frames = args.out / "frames"
    if args.data:
        if not args.data.is_dir():
            raise AdaptError(f"--data {args.data}: no such folder")
        return {"folders": [str(args.data)]}
    if args.carla:
        shutil.rmtree(frames / "carla", ignore_errors=True)      # a recording cut short starts again
        sources.record_carla(args.carla, frames / "carla", vars(args))
        return {"folders": [str(frames / "carla")]}
    if args.unlabelled:
        if args.unlabelled.is_dir() and (args.unlabelled / "rgb").is_dir():
            return {"folders": [str(args.unlabelled)]}
        shutil.rmtree(frames / "unlabelled", ignore_errors=True)
        sources.unlabelled_bag_to_folder(args.unlabelled, frames / "unlabelled", args.rgb_topic, args.every or 1)
        if args.boxes:
            shutil.copyfile(args.boxes, frames / "unlabelled" / "boxes.csv")
        return {"folders": [str(frames / "unlabelled")]}
    folders = []
    for k, bag in enumerate(args.bag):
        out = frames / f"bag{k}"
        marker = out / ".complete"
        if not marker.is_file():
            shutil.rmtree(out, ignore_errors=True)
            sources.bag_to_folder(bag, out, vars(args))
            marker.write_text(str(bag))
        folders.append(str(out))
    return {"folders": folders}


def split_stage(args, folders: list[str]) -> dict:
    user = ordered_pairs([Path(f) for f in folders])
    if args.eval_data:
        held = ordered_pairs([args.eval_data])
        if len(user) < args.min_frames:
            raise TooFewFrames(f"too few frames: {len(user)} labelled frames, adapt needs at least {args.min_frames}")
        finetune, guard = user, []
    else:
        split = split_in_time(user, args.held_out, args.guard_frames, args.min_frames)
        finetune, guard, held = split.finetune, split.guard, split.held_out
    parts = {"train": [(f"u{i:05d}_{p.name}", p) for i, p in enumerate(finetune)],
             "val": [(f"h{i:05d}_{p.name}", p) for i, p in enumerate(held)]}
    record = {"frames": len(user), "finetune": len(finetune), "guard": len(guard), "held_out": len(held),
              "held_out_from": "--eval-data " + str(args.eval_data) if args.eval_data else
              "the last contiguous stretch of the source frames",
              "finetune_span": [finetune[0].name, finetune[-1].name],
              "held_out_span": [held[0].name, held[-1].name], "codings": sorted({p.coding for p in user})}
    if args.keep_data:
        keep_train, keep_val = keep_parts(args.keep_data)
        mixed = thin(keep_train, max(1, round(args.keep_ratio * len(finetune))))
        parts["train"] += [(f"k{i:05d}_{p.name}", p) for i, p in enumerate(mixed)]
        parts["keep"] = [(f"k{i:05d}_{p.name}", p) for i, p in enumerate(keep_val)]
        record.update(keep_mixed_in=len(mixed), keep_scored=len(keep_val))
    write_prepared(args.out / "ft_data", parts)
    (args.out / "split.json").write_text(json.dumps(record, indent=1))
    print(f"split: {record['finetune']} fine-tune / {record['guard']} guard / {record['held_out']} held-out frames "
          f"({record['held_out_from']})" + (f"; keep-data: {record['keep_mixed_in']} mixed in, "
                                            f"{record['keep_scored']} scored" if args.keep_data else ""))
    return record


def labelled_parts(args) -> dict:
    from carla_seg_ros.datasets import find_pairs
    parts = {"held_out": find_pairs(args.out / "ft_data", "val")}
    if args.keep_data:
        parts["keep"] = find_pairs(args.out / "ft_data", "keep")
    return parts


def score_stage(args, model: Path, which: str) -> dict:
    from carla_seg_ros.evaluation.adapt_report import score
    if args.unlabelled:            # box recall on the held-out block; the labelled --keep-data as the guard
        out = {"held_out": box_scores(args, model, which)}
        if args.keep_data:
            out["keep"] = score(model, keep_parts(args.keep_data)[1], 0, desc=f"{which}: keep")[0]
        return out
    out = {}
    for part, pairs in labelled_parts(args).items():
        result, samples = score(model, pairs, args.samples if part == "held_out" else 0,
                                desc=f"{which}: {part}")
        out[part] = result
        if part == "held_out":
            save_samples(args.out / f"samples_{which}.npz", samples)
    return out


def box_scores(args, model: Path, which: str) -> dict:
    from carla_seg_ros.evaluation import box_eval
    folder = Path(json.loads((args.out / "stages" / "frames.json").read_text())["folders"][0])
    path = args.out / f"boxes_{which}.json"
    if box_eval.main(["--data", str(folder), "--part", "held_out", "--model", str(model), "--json", str(path),
                      "--samples", "0"]) != 0:
        raise AdaptError(f"box scoring of {model} failed (message above)")
    result = json.loads(path.read_text())
    return {"vehicle_box_recall": result["overall"]["recall"], "frames": result["frames_scored"],
            "car_share": result["overall"]["car_share"], "model": str(model)}


def train_command(args) -> list[str]:
    """The training child process: `carla-seg train` (labelled) or `self-train` (unlabelled), under torchrun
    for several processes (train.py's DistributedDataParallel path)."""
    if args.unlabelled:
        folder = json.loads((args.out / "stages" / "frames.json").read_text())["folders"][0]
        labelled = args.keep_data or default_data_dir()
        if labelled is None:
            raise AdaptError("--unlabelled self-trains with labelled frames beside it: give --keep-data DIR")
        cmd = ["-m", "carla_seg_ros.learning.self_train", "--init", str(args.start_model), "--unlabelled", folder,
               "--data", str(labelled), "--steps", str(args.steps or 500), "--out", str(args.out / "train"),
               "--device", args.device, "--threads", str(args.threads)]
        if args.batch_size:
            cmd += ["--batch", str(args.batch_size)]
        if (args.out / "train" / "last.pt").is_file():
            cmd.append("--resume")
        return [sys.executable, *cmd]
    cmd = ["-m", "carla_seg_ros.learning.train", "--init", str(args.start_model), "--preset", "finetune",
           "--data", str(args.out / "ft_data"), "--out", str(args.out / "train"), "--epochs", str(args.epochs),
           "--device", args.device, "--threads", str(args.threads), "--resume"]
    if args.class_set:
        cmd += ["--classes", args.class_set]
    if args.steps:
        cmd += ["--max-steps", str(args.steps)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.nproc_per_node > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(args.nproc_per_node), *cmd[1:]]
    return [sys.executable, *cmd]


def run_child(cmd: list[str], what: str) -> None:
    code = subprocess.call(cmd)
    if code in (130, -2):
        raise KeyboardInterrupt
    if code != 0:
        raise AdaptError(f"{what} failed (exit {code}; its message is above)")


def weights_of(args) -> Path:
    name = "teacher.safetensors" if args.unlabelled else "final.safetensors"
    return args.out / "train" / name


def export_stage(args) -> dict:
    onnx = args.out / "model.onnx"
    cmd = [sys.executable, "-m", "carla_seg_ros.learning.export", "--weights", str(weights_of(args)),
           "--out", str(onnx)]
    if args.unlabelled:
        labelled = args.keep_data or default_data_dir()
        cmd += ["--data", str(labelled)] if labelled else ["--no-parity"]
    else:
        cmd += ["--data", str(args.out / "ft_data"), "--split", "val"]
    run_child(cmd, "export")
    return {"onnx": str(onnx)}


def start_onnx(args) -> Path:
    """The 'before' model: the .onnx beside the start weights, else their export (parity-checked)."""
    beside = args.start_model.with_suffix(".onnx")
    if beside.is_file():
        return beside
    out = args.out / "start.onnx"
    if not out.is_file():
        run_child([sys.executable, "-m", "carla_seg_ros.learning.export", "--weights", str(args.start_model),
                   "--out", str(out), "--no-parity"], "export of the start model")
    return out


def report_stage(args, before: dict, after: dict, split: dict) -> dict:
    from carla_seg_ros.evaluation.adapt_report import GUARD_LIMIT, NOT_MEASURED, summary_lines, write_report
    scores = {part: {"before": before[part], "after": after[part]} for part in before}
    guard_note = GUARD_LIMIT if "keep" in scores else NOT_MEASURED
    samples = {}
    if not args.unlabelled:
        b, a = load_samples(args.out / "samples_before.npz"), load_samples(args.out / "samples_after.npz")
        names = after["held_out"]["class_names"]
        samples = {n: (rgb, b[n][1], a[n][1], names) for n, (rgb, _) in a.items() if n in b}
    context = [("command", " ".join(sys.argv)), ("start model", str(args.start_model)), ("split", json.dumps(
        {k: v for k, v in split.items() if k != "held_out_names"}))]
    html = write_report(args.out / "report.html", scores, samples, context, guard_note)
    record = {"metrics": scores, "guard_note": guard_note, "report": str(html)}
    (args.out / "metrics.json").write_text(json.dumps(record, indent=1))
    print("before -> after:\n" + "\n".join(summary_lines(scores, guard_note)) + f"\nreport: {html}")
    return record


def install_stage(args, report: dict, split: dict) -> dict:
    record = {"start_model": str(args.start_model), "command": " ".join(sys.argv), "source": source_key(args),
              "split": {k: v for k, v in split.items() if k != "held_out_names"}, "metrics": report["metrics"],
              "guard_note": report["guard_note"], "class_set": class_set_of(args.out / "model.onnx")}
    card = card_text(args.name, record)
    (args.out / "CARD.md").write_text(card)
    model = user_models.install(args.out / "model.onnx", args.name, record, card, args.models_dir, args.replace)
    print(f"installed {args.name}: {model.path} (seg_node: model:={args.name})")
    return {"name": args.name, "path": str(model.path)}


def class_set_of(onnx: Path) -> str:
    from carla_seg_ros.runtime.model_info import read_onnx_info
    return read_onnx_info(onnx).class_set


def check_args(args) -> None:
    if not args.start_model.is_file():
        raise AdaptError(f"--start-model {args.start_model}: no such file")
    for flag, folder in (("--eval-data", args.eval_data), ("--keep-data", args.keep_data)):
        if folder is not None and not Path(folder).is_dir():
            raise AdaptError(f"{flag} {folder}: no such folder")
    if args.device.startswith("cuda") or args.nproc_per_node > 1 and args.device != "cpu":
        import torch
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise AdaptError(f"--device {args.device}: no CUDA device here (torch.cuda.is_available() is false)")
        if torch.cuda.is_available() and args.nproc_per_node > torch.cuda.device_count():
            raise AdaptError(f"--nproc-per-node {args.nproc_per_node}: only {torch.cuda.device_count()} GPUs")
    if args.engine:
        import importlib.util
        if importlib.util.find_spec("tensorrt") is None:      # checked first: not after an hour of training
            raise AdaptError("--engine needs TensorRT and an NVIDIA GPU (the tensorrt module is not importable "
                             "here); leave it out and seg_node builds the engine at its first start")
    if args.boxes is not None and not args.boxes.is_file():
        raise AdaptError(f"--boxes {args.boxes}: no such file")
    if args.unlabelled and args.eval_data:
        raise AdaptError("--eval-data needs labelled frames; --unlabelled is scored by box recall on its held-out "
                         "block")
    args.name = user_models.check_name(args.name or args.out.resolve().name)
    args.out.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(args.out).free < MIN_FREE_BYTES:
        raise AdaptError(f"disk full: less than {MIN_FREE_BYTES >> 20} MiB free under {args.out}")
    key_path = args.out / "adapt.json"
    key = source_key(args)
    if key_path.is_file() and json.loads(key_path.read_text()) != key:
        raise AdaptError(f"{args.out} holds a run of another source or start model; give another --out")
    key_path.write_text(json.dumps(key, indent=1))


def run(args) -> int:
    check_args(args)
    stages = Stages(args.out)
    t0 = time.time()
    folders = stages.run("frames", lambda: frames_stage(args))["folders"]
    split = ({"frames": "see boxes_before.json", "held_out_from": "the held-out blocks of unlabelled.split_unlabelled"}
             if args.unlabelled else stages.run("split", lambda: split_stage(args, folders)))
    before = stages.run("before", lambda: score_stage(args, start_onnx(args), "before"))
    stages.run("train", lambda: run_child(train_command(args), "training") or {"weights": str(weights_of(args))})
    stages.run("export", lambda: export_stage(args))
    after = stages.run("after", lambda: score_stage(args, args.out / "model.onnx", "after"))
    report = report_stage(args, before, after, split)
    if args.install:
        installed = stages.run("install", lambda: install_stage(args, report, split))
        if args.engine:
            stages.run("engine", lambda: run_child([sys.executable, "-m", "carla_seg_ros.cli", "build-engine",
                                                    "--model", installed["path"]], "TensorRT engine build")
                       or {"engine": "built"})
        if args.swap:
            # the path, not the name: the node may look in another user_models_dir than this command
            run_child([sys.executable, "-m", "carla_seg_ros.ros.model_swap_client", args.swap, installed["path"]],
                      f"model swap on {args.swap}")
    print(f"{PROG}: done in {(time.time() - t0) / 60:.1f} min; {args.out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run the same command again to continue from the last finished stage",
              file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print(f"{PROG}: disk full while writing under {args.out}: free some space and run again", file=sys.stderr)
            return 2
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except (AdaptError, sources.SourceError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
