"""Validation during training: the confusion matrix of the network on frames already held in memory."""
from __future__ import annotations

import numpy as np
import torch

from carla_seg_ros import classes
from carla_seg_ros.evaluation import metrics
from carla_seg_ros.networks.models import input_normalisation, normalize_uint8


@torch.no_grad()
def evaluate_arrays(model, images, labels, device, batch_size=8, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix of the model on preloaded (already resized) frames."""
    model.eval()
    n_cls = num_classes or classes.num_classes()
    cm = np.zeros((n_cls, n_cls), np.int64)
    for i in range(0, len(images), batch_size):
        x = normalize_uint8(torch.from_numpy(images[i:i + batch_size]).to(device), *input_normalisation(model))
        pred = model(x).argmax(1).to(torch.uint8).cpu().numpy()
        for p, l in zip(pred, labels[i:i + batch_size]):
            cm += metrics.confusion_matrix(l, p, n_cls)
    model.train()
    return cm
