"""Distillation into a cheaper student in `carla-seg self-train` (the fast rung's recipe): the student network with
``--init``'s encoder, the KL term on class probabilities, and FitNets-style hints on every decoder level."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from carla_seg_ros.networks.models import build_model


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of KL(teacher || student) between the class distributions (temperature 1)."""
    log_student = F.log_softmax(student_logits.float(), dim=1)
    log_teacher = F.log_softmax(teacher_logits.float(), dim=1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1).mean()


class LevelOutputs:
    """The output of every decoder level at a model's latest forward (forward hooks; each forward overwrites)."""

    def __init__(self, model: torch.nn.Module):
        self.outputs: dict[int, torch.Tensor] = {}
        for i, level in enumerate(model.decoder.levels):
            level.register_forward_hook(lambda module, inputs, output, i=i: self.outputs.__setitem__(i, output))


def hint_loss(student_levels: LevelOutputs, teacher_levels: LevelOutputs) -> torch.Tensor:
    """Mean over decoder levels of the squared error of the student's level output against the teacher's, relative
    to the teacher output's mean square (so every level counts alike whatever its activations' scale)."""
    losses = [F.mse_loss(s.float(), t.float()) / t.float().pow(2).mean().clamp_min(1e-6)
              for s, t in zip(student_levels.outputs.values(), teacher_levels.outputs.values())]
    return torch.stack(losses).mean()


def parse_channels(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel counts, got {text!r}") from None
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(f"channel counts must be positive, got {text!r}")
    return channels


def student_config(init_config: dict, decoder, decoder_block) -> dict:
    """The student's network config: --init's, with the decoder options that were given."""
    config = dict(init_config)
    if decoder is not None:
        config["decoder"] = list(decoder)
    if decoder_block is not None:
        config["decoder_block"] = decoder_block
    if config != init_config and config.get("arch") != "efficientnet_lite_unet":
        raise ValueError(f"--decoder/--decoder-block distil a pretrained-encoder U-Net (efficientnet_lite_unet); "
                         f"--init is a {config.get('arch')}")
    return config


def distilled_student(init_model: torch.nn.Module, config: dict) -> torch.nn.Module:
    """A network of ``config`` carrying ``init_model``'s encoder, and its head too where the decoders' widths match
    (the decoder is then taught to reproduce the old one's levels, see ``hint_loss``); the rest starts fresh."""
    student = build_model(config)
    student.encoder.load_state_dict(init_model.encoder.state_dict())
    if same_widths(student, init_model):
        student.head.load_state_dict(init_model.head.state_dict())
    return student.to(next(init_model.parameters()).device)


def same_widths(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return a.decoder.level_channels == b.decoder.level_channels and a.head.weight.shape == b.head.weight.shape
