"""The training log of `carla-seg train`: log.csv (one row per epoch) and curves.png drawn from it."""
from __future__ import annotations

import csv
from pathlib import Path


def plot_curves(log_rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [r["epoch"] for r in log_rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(ep, [r["train_loss"] for r in log_rows], label="train loss")
    ax[0].set_xlabel("epoch"); ax[0].set_ylabel("loss"); ax[0].set_yscale("log"); ax[0].legend(); ax[0].grid(alpha=.3)
    ev = [r for r in log_rows if r["val_miou"] != ""]
    ax[1].plot([r["epoch"] for r in ev], [r["val_miou"] for r in ev], "o-", label="val mIoU")
    ax[1].plot([r["epoch"] for r in ev], [r["val_pixel_acc"] for r in ev], "s-", label="val pixel accuracy")
    ax[1].set_xlabel("epoch"); ax[1].set_ylim(0, 1); ax[1].legend(); ax[1].grid(alpha=.3)
    fig.suptitle(path.parent.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_log(log_rows: list[dict], out: Path) -> None:
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(log_rows)
    plot_curves(log_rows, out / "curves.png")


LOG_FIELDS = ["epoch", "step", "lr", "train_loss", "val_pixel_acc", "val_miou", "seconds"]
