"""Play camera frames to a node running in its own process and record what it publishes back.

Shared by `carla-seg demo`, `carla-seg bench node` and the integration tests. This process stands in for the CARLA
ROS bridge: it publishes bgra8 frames RELIABLE / KEEP_LAST 10 on the camera topic at a fixed rate and notes the
wall-clock time each frame was sent. The node copies the input header to every output, so a reply is matched to
its frame by the header stamp, and its latency is (wall time the reply arrived) - (wall time the frame was sent).

Readiness is proven, not guessed: the node's output publishers must be in the ROS graph and matched both ways, and
then warm-up frames must come back through the whole pipeline before the measured frames start.

* frames.py        dataset pairs -> bgra8 frames, read ahead, paced at a sensor rate
* node_process.py  the node under test as a subprocess (argv, log, always stopped)
* recorder.py      subscriptions to the node's outputs; replies keyed by stamp; latency summaries
* player.py        the bridge stand-in: publisher, sending, readiness handshake
* messages.py      stamps as integer keys, latency percentiles, a node's DiagnosticStatus, CameraInfo
"""
from carla_seg_ros.ros.playback.frames import (NO_DATA_HELP, Frame, camera_frame, iter_frames, load_frame, paced,
                                               resolve_split)
from carla_seg_ros.ros.playback.messages import (camera_info_message, diagnostics_of, latency_stats, set_stamp,
                                                 stamp_key)
from carla_seg_ros.ros.playback.node_process import READY_TIMEOUT_S, NodeFailed, NodeProcess, node_argv, ros_param
from carla_seg_ros.ros.playback.player import (BRIDGE_DEPTH, CAMERA_FRAME_ID, CAMERA_INFO_TOPIC, CAMERA_TOPIC,
                                               ODOMETRY_TOPIC,
                                               WARMUP_REPLIES, Player)
from carla_seg_ros.ros.playback.recorder import Latest, ReplyRecorder, Stream

__all__ = ["NO_DATA_HELP", "Frame", "camera_frame", "iter_frames", "load_frame", "paced", "resolve_split",
           "diagnostics_of", "latency_stats", "set_stamp", "stamp_key", "camera_info_message", "READY_TIMEOUT_S",
           "NodeFailed", "NodeProcess", "node_argv", "ros_param", "BRIDGE_DEPTH", "CAMERA_FRAME_ID",
           "CAMERA_INFO_TOPIC", "CAMERA_TOPIC", "ODOMETRY_TOPIC", "WARMUP_REPLIES", "Player", "Latest", "ReplyRecorder",
           "Stream"]
