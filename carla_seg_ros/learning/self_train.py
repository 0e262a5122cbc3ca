"""`carla-seg self-train`: adapt a trained model to unlabelled CARLA frames with a mean teacher (model v3's recipe).

Example (model v3, models/README.md: from the v2 weights, the labelled train+val frames and the unlabelled pool):
    git show 3362984:models/carla_unet.safetensors > v2.safetensors
    carla-seg self-train --init v2.safetensors --unlabelled ../shared/data/carla_unlabelled --out runs/v3
    carla-seg export --weights runs/v3/teacher.safetensors --out models/carla_unet.onnx
The run saves the student and the teacher; the model card says how one of them was chosen (val guard, then the
held-out box scores, both printed at the end and written to OUT/final.json).

Every step (DACS / DAFormer style, sized for two CPU cores):
1. a labelled batch: crops of the model height and a width drawn per step (4:3 to 20:9), copy-paste, mostly
   gentle and sometimes strong colour / weather jitter; class-weighted cross-entropy + 0.5 Dice;
2. an unlabelled batch of the same crop size from the training pool of ``--unlabelled``: the teacher (an
   exponential moving average of the student, starting as the initial model) labels the clean crop; a pixel is
   taught only when the teacher's confidence reaches its class's threshold (the running median confidence of the
   class, clipped to [0.5, 0.9], so rare and hard classes are not starved); boxes guide it where a frame has them:
   inside a vehicle box a non-Car label needs 0.99 and a Car label only 0.5, and far from every box Car is never
   taught; half the crops get ClassMix (half of a labelled crop's classes pasted on, labels and all); the student
   sees the result after strong colour jitter and simulated night / fog / rain; plain cross-entropy;
3. one AdamW step on the sum, then the teacher moves towards the student (``--ema``).

Distillation into a cheaper student (the fast rung's recipe): ``--decoder`` / ``--decoder-block`` give the student
another decoder than ``--init``'s. The student takes the encoder of ``--init``; ``--init`` itself, fixed, labels the
unlabelled crops in place of the mean teacher (same thresholds and box guidance) and teaches every pixel of every
crop the student sees through its class probabilities (``--distil-weight`` x KL divergence, labelled crops too).
Where the decoder keeps ``--init``'s widths and changes only its blocks, the head starts as ``--init``'s and every
decoder level learns to reproduce ``--init``'s level output (``--hint-weight`` x squared error relative to that
output's mean square: FitNets' hints); without hints a fresh decoder stood at val mIoU 0.34 after 250 steps, with
hard labels alone and with KL added alike. The mean teacher still follows the student and is saved as its smoothed
twin (give ``--ema 0.99`` or lower, so that the fresh decoder's random start leaves it within a few hundred steps):
    carla-seg self-train --init models/carla_unet_fast.safetensors --height 256 --decoder-block separable \
        --steps 1200 --eval-every 300 --ema 0.99 --out runs/fast_sep
The held-out block of the unlabelled frames (``carla_seg_ros.unlabelled.split_unlabelled``) is never trained on:
it is scored against its boxes every ``--eval-every`` steps, next to val. ``--folds K --fold I`` holds out one
leave-one-stretch-out fold instead (and its guard band), ``--cv`` runs every fold in turn and writes fold tables
(``learning/self_train_cv.py``); that is how recipes are compared (`carla-seg compare-folds`). Recipe options of the
trials: ``--teacher fixed`` (--init labels every crop, no mean teacher) and ``--box-projection-weight`` (the
positive-only box projection term of ``learning/box_losses.py`` on the unlabelled crops' vehicle boxes).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from carla_seg_ros import classes
from carla_seg_ros.datasets import HoodRule
from carla_seg_ros.learning.augment import PASTE_CLASSES, copy_paste, photometric
from carla_seg_ros.learning.box_losses import box_projection_loss, car_hard_negative_loss
from carla_seg_ros.learning.target_augment import class_mix, crop_width, random_crop, strong_photometric
from carla_seg_ros.learning.distillation import (LevelOutputs, distillation_loss, distilled_student, hint_loss,
                                                parse_channels, same_widths, student_config)
from carla_seg_ros.learning.losses import class_weights, segmentation_loss
from carla_seg_ros.learning.network_setup import lr_schedule
from carla_seg_ros.learning.pseudo_labels import (IN_VEHICLE, ClassThresholds, box_map, far_from_boxes,
                                                  pseudo_labels)
from carla_seg_ros.learning.self_train_cv import (add_cv_arguments, check_cv_args, final_fold_rows, run_cv,
                                                  save_initial_row, unlabelled_split)
from carla_seg_ros.learning.self_train_scoring import LOG_FIELDS, evaluate, format_row, plot_log
from carla_seg_ros.learning.training_data import load_splits
from carla_seg_ros.networks.models import DECODER_BLOCKS, input_normalisation, normalize_uint8
from carla_seg_ros.networks.weights import load_model, save_weights
from carla_seg_ros.paths import default_data_dir, default_unlabelled_dir, models_dir
from carla_seg_ros.runtime.input_size import width_for_aspect
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.unlabelled import HELD_OUT, POOL, frames_of, read_frame, read_unlabelled

TARGET_STORE = (512, 384)     # unlabelled frames are held in memory at this size (800x600 sources: 1.04 GB less)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg self-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", type=Path, default=models_dir() / "carla_unet.safetensors",
                   help="trained weights to start from (student and teacher); default: %(default)s")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="labelled dataset folder")
    p.add_argument("--train-splits", type=lambda t: [v for v in t.split(",") if v], default=["train", "val"],
                   help="labelled splits to keep learning (default: train,val, the data of the initial model)")
    p.add_argument("--unlabelled", type=Path, default=default_unlabelled_dir(),
                   help="folder of unlabelled frames (rgb/, boxes.csv); default: $CARLA_SEG_UNLABELLED or "
                        "../shared/data/carla_unlabelled")
    p.add_argument("--out", type=Path, default=Path("runs/self_train"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--height", type=int, default=288,
                   help="model input height (crops and evaluation); a lower one makes a faster model (default 288)")
    p.add_argument("--batch", type=int, default=4, help="labelled frames per step; as many unlabelled (default 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak lr of the decoder and head")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="peak lr of the encoder")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--decoder", type=parse_channels, metavar="C1,C2,...",
                   help="distil into a student with these decoder widths (deepest level first), e.g. 96,64,32,16; "
                        "default: --init's")
    p.add_argument("--decoder-block", choices=sorted(DECODER_BLOCKS),
                   help="distil into a student whose decoder convs are of this kind (separable: depthwise + 1x1); "
                        "default: --init's")
    p.add_argument("--distil-weight", type=float, default=1.0,
                   help="when distilling: weight of the KL divergence from --init's class probabilities to the "
                        "student's, on every pixel the student sees (default 1.0)")
    p.add_argument("--hint-weight", type=float, default=1.0,
                   help="when distilling into a decoder of --init's widths: weight of the relative squared error "
                        "between every decoder level's output and --init's (default 1.0)")
    p.add_argument("--ema", type=float, default=0.999, help="teacher = ema * teacher + (1 - ema) * student")
    p.add_argument("--teacher", choices=["ema", "fixed"], default="ema",
                   help="who labels the unlabelled crops: the mean teacher (ema, the recipe) or --init itself, "
                        "frozen (fixed: recipe B of the trials)")
    p.add_argument("--box-projection-weight", type=float, default=0.0,
                   help="weight of the positive-only box projection term on the unlabelled crops (every row and "
                        "column of a vehicle box must hold some Car; trial C used 1.0); 0 = off (default)")
    p.add_argument("--car-negative-weight", type=float, default=0.0,
                   help="weight of the Car hard-negative term: Car is pushed down far from every box of a boxed "
                        "frame; 0 = off (default)")
    p.add_argument("--target-weight", type=float, default=1.0, help="weight of the pseudo-label loss")
    p.add_argument("--threshold-max", type=float, default=0.9, help="upper clip of the per-class thresholds")
    p.add_argument("--threshold-min", type=float, default=0.5, help="lower clip of the per-class thresholds")
    p.add_argument("--classmix", type=float, default=0.5, help="probability of ClassMix per unlabelled crop")
    p.add_argument("--strong-source", type=float, default=0.3,
                   help="probability that a labelled crop gets the strong jitter and weather")
    p.add_argument("--target-jitter", choices=["strong", "gentle"], default="strong",
                   help="the student's view of an unlabelled crop: strong colour jitter (the recipe) or the gentle "
                        "jitter of supervised training (to measure what the strong one adds)")
    p.add_argument("--weather-p", type=float, default=0.3,
                   help="probability of simulated night / fog / rain in a strongly jittered crop; labelled crops "
                        "get a higher share (0.5, the recipe) scaled with it; 0 = no simulated weather")
    p.add_argument("--no-boxes", dest="boxes", action="store_false", help="ignore boxes.csv (no box guidance)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--limit-images", type=int, help="use only the first N frames of each set (smoke tests)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    add_cv_arguments(p)
    return p


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------
def model_size(height: int) -> tuple[int, int]:
    """The model's own (4:3) input size at ``height``: 384x288, 288x224 (width a multiple of 32)."""
    return width_for_aspect(height, 4 / 3), height


def load_unlabelled(args):
    """(pool images, pool box maps) at TARGET_STORE, the held-out frames ((record, size) pairs, images at the
    model's 4:3 size: every held-out frame of this data is 4:3) and the held-out fold (None without --folds)."""
    frames = read_unlabelled(args.unlabelled)
    split, fold = unlabelled_split(args, frames)
    pool = frames_of(frames, split, POOL)[:args.limit_images]
    held = frames_of(frames, split, HELD_OUT)[:args.limit_images]
    from tqdm import tqdm
    images, maps = [], []
    for fr in tqdm(pool, desc="unlabelled pool", leave=False, disable=None):
        rgb = read_frame(fr)
        images.append(resize_image(rgb, TARGET_STORE))
        maps.append(box_map(fr, TARGET_STORE, (rgb.shape[1], rgb.shape[0])) if args.boxes else
                    np.zeros(TARGET_STORE[::-1], np.uint8))
    held_images, held_sizes = [], []
    for fr in held:
        rgb = read_frame(fr)
        held_images.append(resize_image(rgb, model_size(args.height)))
        held_sizes.append((rgb.shape[1], rgb.shape[0]))
    return np.stack(images), np.stack(maps), list(zip(held, held_sizes)), held_images, fold


def source_batch(images, labels, width, args, paste_ids, rng):
    xs, ys = [], []
    for j in rng.integers(0, len(images), args.batch):
        img, label = images[j], labels[j]
        if rng.random() < 0.5:
            donor = rng.integers(len(images))
            img, label = copy_paste(img, label, images[donor], labels[donor], paste_ids, rng)
        img, (label,) = random_crop(img, [label], (width, args.height), (0.8, 1.35), rng)
        img = (strong_photometric(img, rng, source_weather_p(args)) if rng.random() < args.strong_source
               else photometric(img, rng))
        xs.append(img)
        ys.append(label)
    return np.stack(xs), np.stack(ys)


def source_weather_p(args) -> float:
    """Weather share of strongly jittered labelled crops: 0.5 at the recipe's --weather-p 0.3, scaled with it
    (0.3 / 0.6 is exactly 0.5 in floating point, so the recipe's random draws are unchanged)."""
    return min(1.0, args.weather_p / 0.6)


def student_view(img: np.ndarray, args, rng: np.random.Generator) -> np.ndarray:
    """What the student sees of a (mixed) unlabelled crop; the teacher labelled the clean one."""
    if args.target_jitter == "gentle":
        return photometric(img, rng)
    return strong_photometric(img, rng, args.weather_p)


def target_crops(images, maps, width, args, rng):
    """Clean crops (the teacher's view) and their box maps."""
    xs, ms = [], []
    for j in rng.integers(0, len(images), args.batch):
        img, (bmap,) = random_crop(images[j], [maps[j]], (width, args.height), (1.0, 1.5), rng, pad_value=0)
        xs.append(img)
        ms.append(bmap)
    return np.stack(xs), np.stack(ms)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, ema: float) -> None:
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values()):
        if t.dtype.is_floating_point:
            t.mul_(ema).add_(s.detach(), alpha=1 - ema)
        else:
            t.copy_(s)


# ---------------------------------------------------------------------------------------------------------------
# main loop
# ---------------------------------------------------------------------------------------------------------------


def check_args(p: argparse.ArgumentParser, args) -> None:
    if args.steps < 1 or args.batch < 1 or args.eval_every < 1 or args.checkpoint_every < 1:
        p.error("--steps, --batch, --eval-every and --checkpoint-every must be >= 1")
    if args.height < 32 or args.height % 32:
        p.error(f"--height must be a positive multiple of 32 (the network's stride), got {args.height}")
    if not 0.0 <= args.ema < 1.0:
        p.error(f"--ema must be in [0, 1), got {args.ema}")
    for name in ("distil_weight", "hint_weight", "box_projection_weight", "car_negative_weight"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0.0 < args.threshold_min <= args.threshold_max <= 1.0:
        p.error("the thresholds must satisfy 0 < --threshold-min <= --threshold-max <= 1")
    for name in ("classmix", "strong_source", "weather_p"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} is a probability in [0, 1], got {getattr(args, name)}")
    if {"test", "fullres"} & set(args.train_splits):
        p.error("--train-splits must not include test or fullres: those frames are what the model card reports on")
    if args.data is None:
        p.error("no labelled dataset found: pass --data DIR or set CARLA_SEG_DATA")
    if args.unlabelled is None:
        p.error("no unlabelled frames found: pass --unlabelled DIR or set CARLA_SEG_UNLABELLED")
    check_cv_args(p, args)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        return run_cv(args, run) if args.cv else run(args)
    except (FileNotFoundError, ValueError) as exc:     # missing folders, unreadable frames or weights
        print(f"carla-seg self-train: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from tqdm import tqdm

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    init_model, meta = load_model(args.init, device)
    model_config = student_config(meta["model_config"], args.decoder, args.decoder_block)
    init_info = meta.get("run_info", {})
    hood = HoodRule(init_info.get("hood_mode", "background"), init_info.get("hood_row_fraction", 495 / 600))
    distil = model_config != meta["model_config"]
    student = distilled_student(init_model, model_config) if distil else init_model
    student = student.to(memory_format=torch.channels_last).train()
    teacher = copy.deepcopy(student).eval()
    # Who labels the unlabelled crops: the mean teacher, or when distilling the fixed --init model (the teacher's
    # fresh decoder knows nothing yet).
    # --teacher fixed: a frozen copy of --init (taken before any step or resume) labels them.
    labeller = init_model.eval() if distil else copy.deepcopy(student).eval() if args.teacher == "fixed" else teacher
    hints = distil and args.hint_weight > 0 and same_widths(student, init_model)
    if hints:
        student_levels, labeller_levels = LevelOutputs(student), LevelOutputs(labeller)
    if distil:
        print(f"distilling {args.init} into a student with decoder {model_config.get('decoder', 'widths of --init')} "
              f"({model_config.get('decoder_block', 'conv')} blocks); --init labels the unlabelled crops", flush=True)
    names = classes.class_names()
    car_id = names.index("Car")

    t_load = time.time()
    src_x, src_y = load_splits(args.data, args.train_splits, (400, 300), hood, args.limit_images)
    val = load_splits(args.data, ["val"], model_size(args.height), hood, args.limit_images)
    tgt_x, tgt_maps, held, held_images, fold = load_unlabelled(args)
    print(f"data: {len(src_x)} labelled frames ({'+'.join(args.train_splits)}), {len(tgt_x)} unlabelled pool frames, "
          f"{len(held)} held-out unlabelled frames" + (f" (fold {fold.name})" if fold else "")
          + f" ({time.time() - t_load:.0f}s)", flush=True)

    weights = class_weights(src_y, classes.num_classes()).to(device)
    paste_ids = np.array([names.index(n) for n in PASTE_CLASSES], np.uint8)
    enc = list(student.encoder.parameters())
    enc_ids = {id(q) for q in enc}
    optimizer = torch.optim.AdamW(
        [{"params": enc, "lr_scale": args.encoder_lr / args.lr},
         {"params": [q for q in student.parameters() if id(q) not in enc_ids], "lr_scale": 1.0}],
        lr=args.lr, weight_decay=args.weight_decay)
    # Linear warm-up over 5 % of the steps, then cosine decay to 5 % of the peak (a short adaptation, not a fit).
    lr_at = lr_schedule(args.lr, args.steps, warmup=max(1, args.steps // 20), floor=0.05)
    thresholds = ClassThresholds(classes.num_classes(), args.threshold_min, args.threshold_max)
    mean_std = input_normalisation(student)

    step, elapsed, rows = 0, 0.0, []
    last = args.out / "last.pt"
    if args.resume and last.is_file():
        ckpt = torch.load(last, map_location=device, weights_only=True)
        student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        thresholds.median = ckpt["thresholds"]
        step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        rng = np.random.default_rng([args.seed, step])
        torch.manual_seed(args.seed + step)
        with open(args.out / "log.csv") as f:
            rows = [{k: ("" if v == "" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
        print(f"resumed from {last} at step {step}")

    run_info = {"model": model_config, "input_size": list(model_size(args.height)), "hood_mode": hood.mode,
                "hood_row_fraction": hood.row_fraction, "init": str(args.init), "recipe": "self-train",
                "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "config.json").write_text(json.dumps(run_info, indent=2))

    def save(model, name):
        save_weights(model, model_config, args.out / name, extra={**run_info, "step": step})

    if step == 0:
        row = {k: "" for k in LOG_FIELDS} | {"step": 0, "seconds": 0.0}
        scores, fold_row = evaluate(student, val, held, held_images, device, car_id, fold)
        row.update(scores)
        save_initial_row(args.out, fold_row)
        rows.append(row)
        print(f"step 0 (initial model): {format_row(row)}", flush=True)

    t0 = time.time() - elapsed
    bar = tqdm(range(step, args.steps), initial=step, total=args.steps, desc="self-train", disable=None,
               dynamic_ncols=True)
    window, student_eval = [], None
    for step in bar:
        width = crop_width(rng, args.height)
        sx, sy = source_batch(src_x, src_y, width, args, paste_ids, rng)
        tx, tmap = target_crops(tgt_x, tgt_maps, width, args, rng)
        with torch.no_grad():
            probs = F.softmax(labeller(normalize_uint8(torch.from_numpy(tx).to(device), *mean_std)).float(), dim=1)
            plabel = pseudo_labels(probs, torch.from_numpy(tmap).to(device), thresholds, car_id).cpu().numpy()
        mixed_x, mixed_y = [], []
        for k in range(args.batch):
            img, lab = tx[k], plabel[k].astype(np.uint8)
            if rng.random() < args.classmix:
                img, lab = class_mix(img, lab, sx[k], sy[k], rng)
            mixed_x.append(student_view(img, args, rng))
            mixed_y.append(lab)
        x = normalize_uint8(torch.from_numpy(np.concatenate([sx, np.stack(mixed_x)])).to(device), *mean_std)
        x = x.contiguous(memory_format=torch.channels_last)
        y_src = torch.from_numpy(sy).long().to(device)
        y_tgt = torch.from_numpy(np.stack(mixed_y)).long().to(device)
        lr = lr_at(step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        logits = student(x)
        loss_src = segmentation_loss(logits[:args.batch], y_src, logits.shape[1], weights, dice_weight=0.5)
        kept = (y_tgt != classes.IGNORE_INDEX).float().mean().item()
        loss_tgt = (segmentation_loss(logits[args.batch:], y_tgt, logits.shape[1]) if kept > 0
                    else logits.sum() * 0.0)
        loss = loss_src + args.target_weight * loss_tgt
        if args.box_projection_weight > 0 or args.car_negative_weight > 0:
            car_prob = F.softmax(logits[args.batch:].float(), dim=1)[:, car_id]
        if args.box_projection_weight > 0:
            in_box = torch.from_numpy((tmap & IN_VEHICLE) > 0).to(device)
            loss = loss + args.box_projection_weight * box_projection_loss(car_prob, in_box)
        if args.car_negative_weight > 0:     # a Car label far from boxes can only be a pasted labelled car: keep it
            far = torch.from_numpy(far_from_boxes(tmap)).to(device) & (y_tgt != car_id)
            loss = loss + args.car_negative_weight * car_hard_negative_loss(car_prob, far)
        loss_distil = loss_hint = torch.zeros(())
        if distil and (args.distil_weight > 0 or hints):
            with torch.no_grad():          # --init on the student's very batch; its hooks keep the level outputs
                teacher_logits = labeller(x)
            if args.distil_weight > 0:
                loss_distil = distillation_loss(logits, teacher_logits)
                loss = loss + args.distil_weight * loss_distil
            if hints:
                loss_hint = hint_loss(student_levels, labeller_levels)
                loss = loss + args.hint_weight * loss_hint
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema_update(teacher, student, args.ema)
        window.append((loss_src.item(), loss_tgt.item(), loss_distil.item(), loss_hint.item(), kept))
        bar.set_postfix(src=f"{loss_src.item():.3f}", tgt=f"{loss_tgt.item():.3f}", kept=f"{kept:.2f}", w=width)

        done = step + 1
        if done % args.checkpoint_every == 0 or done == args.steps:
            means = np.mean(window, axis=0)
            window = []
            row = {k: "" for k in LOG_FIELDS} | {"step": done, "lr": lr, "source_loss": means[0],
                                                 "target_loss": means[1], "distil_loss": means[2],
                                                 "hint_loss": means[3], "kept_fraction": means[4],
                                                 "seconds": round(time.time() - t0, 1)}
            if done % args.eval_every == 0 or done == args.steps:
                student_eval = evaluate(student, val, held, held_images, device, car_id, fold)
                row.update(student_eval[0])
                print(f"step {done}: {format_row(row)}", flush=True)
            rows.append(row)
            with open(args.out / "log.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
                w.writeheader()
                w.writerows(rows)
            plot_log(rows, args.out / "curves.png")
            torch.save({"student": student.state_dict(), "teacher": teacher.state_dict(),
                        "optimizer": optimizer.state_dict(), "thresholds": thresholds.median, "step": done,
                        "elapsed": time.time() - t0}, last)

    step = args.steps
    save(student, "student.safetensors")
    save(teacher, "teacher.safetensors")
    # The last step's evaluation already scored this very student (a fold run's costliest fixed part).
    (student_scores, student_row), (teacher_scores, teacher_row) = (
        student_eval or evaluate(student, val, held, held_images, device, car_id, fold),
        evaluate(teacher, val, held, held_images, device, car_id, fold))
    final = {"student": student_scores, "teacher": teacher_scores,
             **({"fold": fold.name, "fold_rows": final_fold_rows(args.out, student_row, teacher_row)} if fold else {}),
             "class_thresholds": dict(zip(names, [round(float(v), 4) for v in thresholds.thresholds()])),
             "minutes": round((time.time() - t0) / 60, 1)}
    (args.out / "final.json").write_text(json.dumps(final, indent=2))
    print(json.dumps(final, indent=2))
    print(f"done in {final['minutes']} min; weights: {args.out}/student.safetensors, teacher.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
