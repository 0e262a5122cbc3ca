"""PyTorch on an NVIDIA GPU: fp16, channels-last, a CUDA graph for batch 1 (the node's case).

Same weights (.safetensors beside the .onnx) and the same pre/post-processing as models.DeployModel, with the
precision split where it matters: the uint8 -> normalised conversion runs in fp32 (``normalize_uint8``) and is
then cast to fp16 (values are within about +-3, where fp16 has 3 decimal digits), the network runs in fp16, and the
softmax/confidence run in fp32 so confidence bytes match the CPU backends to within rounding.

Batch 1 at the model's own size is captured once into a CUDA graph with static input/output buffers: a frame is
one host->device copy, one graph replay (no per-kernel launch overhead) and two device->host copies into pinned
buffers. Other batch sizes and the other widths of a keep_aspect model (runtime/input_size.py) run eagerly.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError, require_cuda
from carla_seg_ros.runtime.backends.torch_backend import weights_beside

WARMUP_ITERS = 3  # before capture: lets cuDNN pick its algorithms and allocates the workspace


class TorchCudaBackend(Backend):
    name = "torch_cuda"

    def __init__(self, model_path, info=None, threads: int = 0, device: str = "cuda", cuda_graph: bool = True,
                 **options):
        super().__init__(model_path, info, threads)
        if options:
            raise BackendError(f"torch_cuda: unknown options {sorted(options)}")
        torch = require_cuda("torch_cuda")
        from carla_seg_ros.networks.weights import load_model
        self.torch = torch
        self.device = torch.device(device)
        torch.backends.cudnn.benchmark = True  # the fastest conv algorithms, picked once per input shape
        net, _ = load_model(weights_beside(self.model_path), device=self.device)
        self.net = net.half().to(memory_format=torch.channels_last).eval()
        from carla_seg_ros.networks.models import input_normalisation
        mean, std = input_normalisation(net)     # the network's own where it has one, as DeployModel applies
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        w, h = self.input_size
        self.host_in = torch.empty((1, h, w, 3), dtype=torch.uint8).pin_memory()
        self.host_ids = torch.empty((1, h, w), dtype=torch.uint8).pin_memory()
        self.host_conf = torch.empty((1, h, w), dtype=torch.uint8).pin_memory()
        self.graph = self._capture() if cuda_graph else None

    @property
    def description(self) -> str:
        return f"torch_cuda fp16 ({'CUDA graph for batch 1' if self.graph else 'eager'})"

    def forward(self, images):
        """uint8 (N, H, W, 3) CUDA tensor -> (class ids, confidence) uint8 (N, H, W), as DeployModel computes.

        The normalisation is models.normalize_uint8's arithmetic with mean/std already on the device: building
        them inside the forward (as normalize_uint8 does) would be a host->device copy, illegal in graph capture.
        """
        torch = self.torch
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        x = ((x - self.mean) / self.std).half().contiguous(memory_format=torch.channels_last)
        prob = torch.softmax(self.net(x).float(), dim=1)
        confidence, class_ids = prob.max(dim=1)
        return class_ids.to(torch.uint8), (confidence * 255.0).round().to(torch.uint8)

    def _capture(self):
        torch = self.torch
        self.static_in = torch.zeros((1,) + tuple(self.host_in.shape[1:]), dtype=torch.uint8, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_ITERS):
                self.forward(self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            self.static_ids, self.static_conf = self.forward(self.static_in)
        return graph

    def _infer(self, images: np.ndarray):
        torch = self.torch
        if self.graph is not None and images.shape == tuple(self.host_in.shape):
            self.host_in.numpy()[:] = images
            self.static_in.copy_(self.host_in, non_blocking=True)
            self.graph.replay()
            self.host_ids.copy_(self.static_ids, non_blocking=True)
            self.host_conf.copy_(self.static_conf, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return self.host_ids.numpy().copy(), self.host_conf.numpy().copy()
        with torch.no_grad():
            ids, conf = self.forward(torch.from_numpy(images).to(self.device, non_blocking=False))
        return ids.cpu().numpy(), conf.cpu().numpy()
