"""The user model store: where it is, installing (atomic, names checked), resolving by name or path, listing."""
from __future__ import annotations

import json

import pytest

from carla_seg_ros.runtime import user_models as um


def test_models_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv(um.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert um.user_models_dir() == tmp_path / "xdg" / "carla_seg_ros" / "models"
    monkeypatch.setenv(um.ENV_DIR, str(tmp_path / "env"))
    assert um.user_models_dir() == tmp_path / "env"
    assert um.user_models_dir(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.delenv(um.ENV_DIR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert um.user_models_dir() == tmp_path / "home" / ".local" / "share" / "carla_seg_ros" / "models"


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "-x", "with space", "x" * 65])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError, match="model name"):
        um.check_name(bad)


def test_install_resolve_and_list(tmp_path, model_path, capsys):
    root = tmp_path / "models"
    record = {"class_set": "lyft13", "start_model": str(model_path),
              "metrics": {"held_out": {"before": {"miou": 0.41}, "after": {"miou": 0.52}}}}
    m = um.install(model_path, "town10", record, "# card\n", root)
    assert m.path.read_bytes() == model_path.read_bytes()
    assert json.loads((m.folder / um.RECORD_FILE).read_text())["name"] == "town10"
    assert (m.folder / um.CARD_FILE).read_text() == "# card\n"
    with pytest.raises(FileExistsError, match="already installed"):
        um.install(model_path, "town10", record, "", root)
    um.install(model_path, "town10", dict(record, note="second"), "", root, replace=True)
    assert um.installed(root)[0].record["note"] == "second"
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no staging folder is left behind"
    # by name, by path, neither
    assert um.resolve_model("town10", root) == root / "town10" / um.MODEL_FILE
    assert um.resolve_model(str(model_path), root) == model_path
    assert um.resolve_model("nosuch", root) is None
    assert um.resolve_model("../town10", root) is None
    # a half-made folder (no model file) is not a model
    (root / "broken").mkdir()
    assert [x.name for x in um.installed(root)] == ["town10"]
    assert um.main(["--models-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "town10" in out and "0.410 -> 0.520" in out and "broken" not in out
    assert um.main(["--models-dir", str(root), "--path", "town10"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "town10" / um.MODEL_FILE)
    assert um.main(["--models-dir", str(root), "--path", "nosuch"]) == 1


def test_empty_store_says_so(tmp_path, capsys):
    assert um.main(["--models-dir", str(tmp_path / "none")]) == 0
    assert "no user models" in capsys.readouterr().out
