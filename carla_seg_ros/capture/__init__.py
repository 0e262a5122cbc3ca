"""Data capture: pairing RGB and semantic frames from topics or bags and writing them as a dataset folder."""
