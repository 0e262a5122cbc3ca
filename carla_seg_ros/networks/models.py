"""Segmentation networks: the seed U-Net (reproduction baseline) and the production encoder/decoder U-Net.

Layout follows segmentation_models.pytorch: an *encoder* returns a list of feature maps at strides
1, 2, 4, ... ; a *decoder* fuses them back up to full resolution; a 1x1 *head* maps to class logits.
Every network takes a normalised float tensor (N, 3, H, W) and returns logits (N, C, H, W) at the same H, W,
so training, evaluation, export and every runtime backend treat them identically.

Models are built from a small JSON-able config dict (``arch`` plus keyword arguments) which is stored next to
the weights, so a checkpoint can be rebuilt without pickled Python objects.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


# --------------------------------------------------------------------------------------------------------------
# Seed architecture: the Keras notebook's U-Net (32 base filters, 4 down / 4 up blocks, ConvTranspose, dropout).
# --------------------------------------------------------------------------------------------------------------
class _SeedBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.body(x)


class SeedUNet(nn.Module):
    """Faithful PyTorch port of the original notebook model (no BatchNorm, ConvTranspose upsampling)."""

    def __init__(self, num_classes: int = 13, base: int = 32, depth: int = 4, dropout: float = 0.3):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_in = 3
        for w in widths[:-1]:
            self.down.append(_SeedBlock(c_in, w, dropout))
            c_in = w
        self.bottleneck = _SeedBlock(widths[-2], widths[-1], dropout)
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w_skip, w_deep in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.ConvTranspose2d(w_deep, w_skip, 2, stride=2))
            self.up_blocks.append(_SeedBlock(2 * w_skip, w_skip, dropout))
        self.head = nn.Conv2d(base, num_classes, 1)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------------------------------------------
# Production model: residual encoder + light U-Net decoder, BatchNorm everywhere (folds into convs at export).
# --------------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """ResNet basic block; the first block of a stage downsamples with a strided conv."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x), inplace=True)


class ResNetEncoder(nn.Module):
    """Stem at stride 2, then one stage per width, each halving the resolution.

    Returns the features at strides 2, 4, 8, ... (one per stage plus the stem); the decoder adds the full-res path.
    """

    def __init__(self, widths=(16, 32, 64, 96, 128), blocks=(1, 1, 2, 2)):
        super().__init__()
        assert len(blocks) == len(widths) - 1
        self.stem = conv_bn_relu(3, widths[0], stride=2)
        self.stages = nn.ModuleList()
        for c_in, c_out, n in zip(widths[:-1], widths[1:], blocks):
            layers = [BasicBlock(c_in, c_out, 2)] + [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*layers))
        self.out_channels = list(widths)

    def forward(self, x):
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


def separable_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """A 3x3 depthwise conv then a 1x1 pointwise conv, each with BN and ReLU: the receptive field of a 3x3 conv at
    about 1/9 of its multiply-adds once c_out is more than a few channels (MobileNet's block)."""
    return nn.Sequential(
        conv_bn_relu(c_in, c_in, groups=c_in),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


DECODER_BLOCKS = {"conv": conv_bn_relu, "separable": separable_bn_relu}


class UNetDecoder(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip, one or two 3x3 conv-BN-ReLU per level.

    ``block="separable"`` makes each conv depthwise-separable, for a cheaper rung: the full 3x3 convs at strides 2-16
    are 45 % of the Lite0 U-Net's multiply-adds (tried for the fast rung: docs/history/model_card_v1_v2_v3.md).
    """

    def __init__(self, encoder_channels, decoder_channels, convs_per_level: int = 1, block: str = "conv"):
        super().__init__()
        if block not in DECODER_BLOCKS:
            raise ValueError(f"unknown decoder block {block!r}; known: {sorted(DECODER_BLOCKS)}")
        make = DECODER_BLOCKS[block]
        self.levels = nn.ModuleList()
        c_deep = encoder_channels[-1]
        for c_skip, c_out in zip(reversed(encoder_channels[:-1]), decoder_channels):
            convs = [make(c_deep + c_skip, c_out)]
            convs += [make(c_out, c_out) for _ in range(convs_per_level - 1)]
            self.levels.append(nn.Sequential(*convs))
            c_deep = c_out
        self.out_channels = c_deep
        self.level_channels = tuple(decoder_channels[:len(self.levels)])

    def forward(self, feats):
        x = feats[-1]
        for level, skip in zip(self.levels, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = level(torch.cat([x, skip], dim=1))
        return x


class FastUNet(nn.Module):
    """Encoder/decoder U-Net for real-time CPU inference.

    The decoder stops at stride 2 (the stem's resolution) and the logits are upsampled bilinearly to the input
    size, as in most real-time segmentation networks: a full-resolution decoder level would cost more than the
    whole encoder for little gain at this input size.
    """

    def __init__(self, num_classes: int = 13, widths=(16, 32, 64, 96, 128), blocks=(1, 2, 2, 1),
                 decoder=(96, 64, 32, 16), dropout: float = 0.1):
        super().__init__()
        self.encoder = ResNetEncoder(widths, blocks)
        self.decoder = UNetDecoder(self.encoder.out_channels, decoder)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)

    def forward(self, x):
        y = self.head(self.dropout(self.decoder(self.encoder(x))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class EfficientNetLiteUNet(nn.Module):
    """ImageNet-pretrained EfficientNet-Lite encoder (efficientnet_lite.py) under the same U-Net decoder and head as
    FastUNet: features at strides 2-32, decoder down to stride 2, 1x1 head, logits upsampled to the input.

    The Lite weights expect their own input normalisation, so the model carries it (``input_mean``/``input_std``, also
    in its config and in the ONNX metadata) and normalize_uint8 applies it. Building the model does not load the
    ImageNet weights: training calls ``load_pretrained()``; a trained model is rebuilt from its own weights file.
    """

    def __init__(self, num_classes: int = 13, encoder: str = "lite0", decoder=(96, 64, 32, 16), dropout: float = 0.1,
                 mean=None, std=None, decoder_block: str = "conv"):
        super().__init__()
        from carla_seg_ros.networks.efficientnet_lite import LITE_MEAN, LITE_STD, EfficientNetLiteEncoder
        self.encoder = EfficientNetLiteEncoder(encoder)
        self.decoder = UNetDecoder(self.encoder.out_channels, decoder, block=decoder_block)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)
        self.input_mean = tuple(mean if mean is not None else LITE_MEAN)
        self.input_std = tuple(std if std is not None else LITE_STD)

    def load_pretrained(self) -> None:
        self.encoder.load_imagenet()

    def forward(self, x):
        y = self.head(self.dropout(self.decoder(self.encoder(x))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


ARCHITECTURES = {"seed_unet": SeedUNet, "fast_unet": FastUNet, "efficientnet_lite_unet": EfficientNetLiteUNet}


def build_model(config: dict) -> nn.Module:
    """Build a network from ``{"arch": name, **kwargs}`` (the JSON stored beside the weights)."""
    config = dict(config)
    arch = config.pop("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def input_normalisation(net: nn.Module) -> tuple[tuple, tuple]:
    """(mean, std) of 0..1 RGB that a network expects: its own ``input_mean``/``input_std`` (pretrained encoders),
    else the training-split statistics of normalization.py (the networks trained from scratch)."""
    from carla_seg_ros.networks.normalization import MEAN, STD
    return tuple(getattr(net, "input_mean", MEAN)), tuple(getattr(net, "input_std", STD))


def normalize_uint8(images: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> normalised float (N, 3, H, W): the preprocessing every model input goes through.

    Kept in one function so training, the exported graph and the PyTorch backends cannot drift apart. mean/std
    default to normalization.MEAN/STD; pass ``*input_normalisation(net)`` for a network with its own.
    """
    from carla_seg_ros.networks.normalization import MEAN, STD
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN if mean is None else mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD if std is None else std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class DeployModel(nn.Module):
    """uint8 RGB (N, H, W, 3) in; class ids uint8 (N, H, W) and confidence uint8 (max softmax x 255) out.

    This is the graph exported to ONNX (and built into TensorRT engines): pre- and post-processing run inside the
    runtime, so a backend only copies bytes in and out and every backend returns exactly the same thing.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.mean, self.std = input_normalisation(net)

    def forward(self, images: torch.Tensor):
        logits = self.net(normalize_uint8(images, self.mean, self.std))
        top, class_ids = logits.max(dim=1, keepdim=True)
        # max softmax = 1 / sum(exp(logits - max)): no full softmax tensor. ONNX Runtime's Softmax over the channel
        # axis of NCHW took 31 of 62 ms per frame on the 2-core machine; this takes a few.
        confidence = torch.exp(logits - top).sum(dim=1).reciprocal()
        return class_ids[:, 0].to(torch.uint8), (confidence * 255.0).round().to(torch.uint8)
