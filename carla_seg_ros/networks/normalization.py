"""Input normalisation of the networks: the statistics every model's first layer expects (no torch import, so the
runtimes can read them without loading PyTorch)."""

# Per-channel statistics of the training split (RGB, 0..1), rounded; stored in the ONNX metadata too.
MEAN = (0.31, 0.37, 0.38)
STD = (0.22, 0.23, 0.25)
