"""`colcon build` of the package in a scratch workspace, and the installed seg_node running from that install.

This is what an apt-ROS user does (`colcon build`, `ros2 run carla_seg_ros seg_node`), minus `source
install/setup.bash`, which the PyPI ROS wheels cannot provide: the test sets the two variables that script would
(PYTHONPATH to the install's site-packages, AMENT_PREFIX_PATH to the install prefix) and runs the installed files,
never the source tree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DOMAIN_ID = "52"
PACKAGE = "carla_seg_ros"
# What a checkout holds that is no part of the package source.
NOT_SOURCE = (".venv", ".git", "runs", "out", "build", "install", "log", "*.egg-info", "__pycache__",
              ".pytest_cache", "*.engine", ".gl", ".whl")


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """Build the package with colcon in a fresh workspace; returns the package's install prefix."""
    if shutil.which("colcon", path=str(VENV_BIN)) is None:
        pytest.skip(f"colcon is not installed in {VENV_BIN} (pip install -e '.[test]')")
    ws = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(ROOT, ws / "src" / PACKAGE, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(VENV_BIN / "colcon"), "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install"), "--event-handlers",
           "console_direct+"]
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return ws / "install" / PACKAGE   # colcon's default isolated layout: one prefix per package


def installed_env(prefix: Path) -> dict:
    """What `source install/setup.bash` would export for this package."""
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
                AMENT_PREFIX_PATH=str(prefix), ROS_DOMAIN_ID=DOMAIN_ID)


def test_colcon_installs_executable_and_share_files(install):
    share = install / "share" / PACKAGE
    expected = [install / "lib" / PACKAGE / "seg_node",
                install / "lib" / PACKAGE / "seg_eval_node",
                install / "lib" / PACKAGE / "carla-seg",          # carla_live.launch.py starts the client from here
                share / "package.xml",
                share / "launch" / "seg.launch.py",
                share / "launch" / "carla_live.launch.py",
                share / "config" / "carla_objects.json",
                share / "config" / "seg.yaml",
                share / "config" / "classes.yaml",
                share / "config" / "occupancy.yaml",
                share / "models" / "carla_unet.onnx",
                install / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE]
    missing = [str(p.relative_to(install)) for p in expected if not p.is_file()]
    assert not missing, f"colcon install lacks {missing}"
    assert os.access(install / "lib" / PACKAGE / "seg_node", os.X_OK)


def test_installed_package_resolves_share_dir_through_ament_index(install, tmp_path):
    code = ("import carla_seg_ros, carla_seg_ros.paths as p; "
            "print(carla_seg_ros.__file__); print(p.share_dir()); print(p.default_model())")
    # cwd outside the checkout: `python -c` puts the cwd on sys.path, which would import the source tree instead
    proc = subprocess.run([sys.executable, "-c", code], env=installed_env(install), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    module_file, share, model = proc.stdout.split()
    assert Path(module_file).resolve().is_relative_to(install.resolve()), f"imported {module_file}, not the install"
    assert Path(share).resolve() == (install / "share" / PACKAGE).resolve()
    assert Path(model).is_file()


def test_installed_seg_node_missing_model_is_a_clean_startup_error(install, tmp_path):
    proc = subprocess.run([str(install / "lib" / PACKAGE / "seg_node"), "--ros-args",
                           "-p", "model_path:=/does/not/exist.onnx"],
                          env=installed_env(install), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode != 0, "seg_node started without its model"
    assert "/does/not/exist.onnx" in output, "the error must name the missing file"
    assert "Traceback" not in output, "a missing model must be a clear message, not a traceback"


def test_installed_seg_node_answers_frames_with_its_share_model(install, tmp_path):
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import Image

    from carla_seg_ros.ros.playback import CAMERA_TOPIC, NodeProcess, Player

    env = installed_env(install)
    argv = [str(install / "lib" / PACKAGE / "seg_node"), "--ros-args", "-r", f"image:={CAMERA_TOPIC}"]
    player = Player(name="colcon_test_player", domain_id=int(DOMAIN_ID))
    masks = player.watch("/seg_node/mask", Image)
    node = NodeProcess("installed seg_node", argv, log_path=tmp_path / "seg_node.log", env=env)
    try:
        node.start()
        frame = np.full((600, 800, 4), 128, np.uint8)   # any valid frame proves the installed pipeline runs
        player.wait_ready(node, player.image_message(frame), timeout=120)
        msg = player.image_message(frame)
        for i in range(3):
            player.send(msg, 1_000_000_000 * (i + 1))
        player.drain(node)
        node.check()
    finally:
        node.close()
        player.close()
    log = (tmp_path / "seg_node.log").read_text(errors="replace")
    assert len(masks.received) >= 1, f"no mask from the installed seg_node; log:\n{log[-3000:]}"
    # The CPU runtimes may pick the int8 file beside the fp32 one (model per backend): either must come from share/.
    share_models = install / "share" / PACKAGE / "models"
    assert str(share_models) in log or str(share_models.resolve()) in log, \
        f"seg_node should load its model from the install's share directory ({share_models}); log:\n{log[-3000:]}"
