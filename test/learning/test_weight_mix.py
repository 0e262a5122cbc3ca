"""`carla-seg mix-weights`: the mix is exact at both ends and linear between, integer tensors are kept, the output
loads as the same network, and mismatched or unreadable files are one clear error."""
from __future__ import annotations

import pytest
import torch

from carla_seg_ros.learning import weight_mix
from carla_seg_ros.networks.weights import load_model, read_metadata, save_weights
from carla_seg_ros.paths import models_dir


def test_mix_state_is_linear_and_keeps_integer_tensors():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(2)}
    assert torch.equal(weight_mix.mix_state(a, b, 1.0)["w"], a["w"])
    assert torch.equal(weight_mix.mix_state(a, b, 0.0)["w"], b["w"])
    mixed = weight_mix.mix_state(a, b, 0.25)
    assert torch.allclose(mixed["w"], torch.tensor([2.5, 4.5])) and mixed["n"].item() == 7
    with pytest.raises(ValueError, match="different tensors"):
        weight_mix.mix_state(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        weight_mix.mix_state(a, {"w": torch.zeros(3), "n": b["n"]}, 0.5)


def test_the_cli_writes_a_loadable_mix_of_the_committed_model_and_a_perturbed_copy(tmp_path):
    model, meta = load_model(models_dir() / "carla_unet.safetensors")
    base = tmp_path / "base.safetensors"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    save_weights(model, meta["model_config"], base)                # "base" = the committed weights + 1
    out = tmp_path / "mixed.safetensors"
    assert weight_mix.main([str(models_dir() / "carla_unet.safetensors"), str(base), "--alpha", "0.75",
                            "--out", str(out)]) == 0
    mixed, mixed_meta = load_model(out)
    committed, _ = load_model(models_dir() / "carla_unet.safetensors")
    name, param = next(iter(committed.named_parameters()))
    assert torch.allclose(dict(mixed.named_parameters())[name], param + 0.25, atol=1e-5)
    assert read_metadata(out)["run_info"]["mixed"]["alpha"] == 0.75
    assert mixed_meta["model_config"] == meta["model_config"]


def test_bad_inputs_are_one_clear_error(tmp_path, capsys):
    committed = str(models_dir() / "carla_unet.safetensors")
    assert weight_mix.main([committed, str(tmp_path / "missing.safetensors"), "--alpha", "0.5",
                            "--out", str(tmp_path / "o.safetensors")]) == 2
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00not a header" * 4)
    assert weight_mix.main([committed, str(corrupt), "--alpha", "0.5", "--out", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("carla-seg mix-weights:") == 2 and not (tmp_path / "o.safetensors").exists()
    with pytest.raises(SystemExit):
        weight_mix.main([committed, committed, "--alpha", "1.5", "--out", str(tmp_path / "o.safetensors")])
