"""Fast DDS configurations for the processes the tools start: ``default`` (Fast DDS as installed) or
``large_frames`` (config/fastdds_large_frames.xml: the default transports with 32 MB buffers, see that file).

Fast DDS reads its profile once per process, when the first participant is created, so a configuration is an
environment: ``dds_env`` for a child process, ``apply_in_this_process`` for the calling process before its first
``rclpy.init``. The variables that could carry a configuration in from the caller's shell are cleared first, so
``default`` really is Fast DDS's defaults.
"""
from __future__ import annotations

import os

from carla_seg_ros.paths import config_path

PROFILE_NAME = "fastdds_large_frames.xml"
DDS_CONFIGS = ("default", "large_frames")
# The chosen setting (`carla-seg bench transport`): matches default-configured peers both ways, and is fast.
DEFAULT_DDS_CONFIG = "large_frames"
_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS",
              "RMW_FASTRTPS_USE_QOS_FROM_XML")


def profile_path():
    return config_path(PROFILE_NAME)


def dds_overrides(config: str) -> dict:
    """The variables that select ``config`` (values None = unset)."""
    if config not in DDS_CONFIGS:
        raise ValueError(f"unknown DDS configuration {config!r}; one of: {', '.join(DDS_CONFIGS)}")
    values = dict.fromkeys(_VARIABLES)
    if config == "large_frames":
        values["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile_path())
    return values


def _select(env, config: str):
    """Set or unset ``config``'s variables in the mapping ``env`` (a dict or os.environ); returns it."""
    for key, value in dds_overrides(config).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def dds_env(config: str, base: dict | None = None) -> dict:
    """A child-process environment: ``base`` (default: this process's) with ``config`` selected."""
    return _select(dict(os.environ if base is None else base), config)


def apply_in_this_process(config: str) -> None:
    """Select ``config`` for this process; only effective before its first DDS participant (rclpy.init)."""
    _select(os.environ, config)
