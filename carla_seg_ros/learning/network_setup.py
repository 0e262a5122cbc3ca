"""The network and optimiser of a training run: a fresh preset network with its ImageNet encoder, or an --init model
(re-headed for another class set), AdamW with the encoder's own learning rate, and the warm-up + cosine schedule."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from carla_seg_ros import classes
from carla_seg_ros.networks.models import build_model
from carla_seg_ros.networks.weights import load_model


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def build_network(args, verbose: bool = True):
    """The network of the preset, with its ImageNet encoder weights on a fresh run, or the --init model's weights;
    (model, JSON-able config)."""
    if getattr(args, "init", None):
        model, meta = load_model(args.init)
        init_set = getattr(args, "init_class_set", args.class_set)
        if args.class_set != init_set:
            meta["model_config"] = rehead(model, meta["model_config"], init_set, args.class_set)
            if verbose:
                print(f"init: new head for {args.class_set} ({meta['model_config']['num_classes']} classes), each "
                      f"class starting from the {init_set} class that predicted its pixels before")
        if getattr(args, "dropout", None) is not None:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                    m.p = args.dropout
        if verbose:
            print(f"init: {args.init} ({meta['model_config']['arch']}, {args.class_set}); no ImageNet weights loaded")
        return model.train(), meta["model_config"]
    model_config = {"arch": args.arch, "num_classes": classes.num_classes(getattr(args, "class_set",
                                                                                    classes.DEFAULT_CLASS_SET))}
    if getattr(args, "dropout", None) is not None:
        model_config["dropout"] = args.dropout
    if args.arch == "efficientnet_lite_unet":
        from carla_seg_ros.networks.efficientnet_lite import LITE_MEAN, LITE_STD
        model_config.update(encoder=args.encoder, mean=list(LITE_MEAN), std=list(LITE_STD))
    model = build_model(model_config)
    if hasattr(model, "load_pretrained") and not (args.resume and (args.out / "last.pt").is_file()):
        model.load_pretrained()
        if verbose:
            print(f"encoder: ImageNet weights of EfficientNet-{args.encoder.capitalize()} loaded")
    return model, model_config


def parent_classes(old_set: str, new_set: str) -> list[int]:
    """For each class of ``new_set``, the ``old_set`` class its pixels had: the same name, else the old class most
    of its CARLA 0.9.14+ tags (tags29) map to (Sky -> Unlabeled, TrafficLight -> TrafficSign in lyft13)."""
    old_names, new_names = classes.class_names(old_set), classes.class_names(new_set)
    old_map, new_map = classes.tag_maps(old_set)["tags29"], classes.tag_maps(new_set)["tags29"]
    parents = []
    for c, name in enumerate(new_names):
        if name in old_names:
            parents.append(old_names.index(name))
            continue
        votes = [old_map[t] for t, k in sorted(new_map.items(), key=lambda tk: int(tk[0]))
                 if k == c and old_map.get(t, 255) < len(old_names)]
        parents.append(max(votes, key=votes.count) if votes else 0)     # a tie: the lowest tag's class
    return parents


def rehead(model, model_config: dict, old_set: str, new_set: str) -> dict:
    """Give a trained network a 1x1 head for another class set; every new class starts as a copy of its parent
    class (parent_classes), so the network first predicts what it did before and fine-tuning splits the classes
    apart. Returns the new model config."""
    head = getattr(model, "head", None)
    if not isinstance(head, torch.nn.Conv2d) or head.kernel_size != (1, 1):
        raise SystemExit(f"--classes {new_set}: the --init network ({model_config['arch']}) has no 1x1 head to "
                         f"replace; train it from scratch for {new_set} instead")
    parents = parent_classes(old_set, new_set)
    new = torch.nn.Conv2d(head.in_channels, len(parents), 1, bias=head.bias is not None)
    with torch.no_grad():
        new.weight.copy_(head.weight[parents])
        if head.bias is not None:
            new.bias.copy_(head.bias[parents])
    model.head = new
    return dict(model_config, num_classes=len(parents))


def make_optimizer(model, args) -> torch.optim.Optimizer:
    """AdamW; with --encoder-lr the pretrained encoder learns at its own (smaller) fraction of the scheduled lr."""
    encoder_lr = getattr(args, "encoder_lr", None)
    if encoder_lr and hasattr(model, "encoder"):  # lr_scale: each group's fraction of the scheduled peak lr
        enc = list(model.encoder.parameters())
        enc_ids = {id(q) for q in enc}
        groups = [{"params": enc, "lr_scale": encoder_lr / args.lr},
                  {"params": [q for q in model.parameters() if id(q) not in enc_ids], "lr_scale": 1.0}]
    else:
        groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)


def lr_schedule(peak: float, total_steps: int, warmup: int | None = None, floor: float = 0.01):
    """Linear warm-up (default: a tenth of the steps, at most 200), then cosine decay to ``floor`` of the peak."""
    warmup = min(200, total_steps // 10) if warmup is None else warmup

    def lr_at(step):
        if step < warmup:
            return peak * (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
    return lr_at
