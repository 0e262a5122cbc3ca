"""The positive-only box projection term: zero when every box row and column holds Car, one per unfilled span,
blind to everything outside the boxes, and a gradient that raises Car inside them. The Car hard-negative term:
-log(1 - P) on the negative pixels only, pushing Car down there and nowhere else."""
from __future__ import annotations

import pytest
import torch

from carla_seg_ros.learning.box_losses import box_projection_loss, car_hard_negative_loss


def boxes(h=8, w=10):
    m = torch.zeros((1, h, w), dtype=torch.bool)
    m[0, 2:5, 3:7] = True      # a 3 x 4 box
    return m


def test_a_car_diagonal_fills_every_projection():
    p = torch.zeros((1, 8, 10))
    p[0, 2, 3] = p[0, 3, 4] = p[0, 4, 5] = p[0, 4, 6] = 1.0    # one Car pixel per row and per column of the box
    assert box_projection_loss(p, boxes()).item() == pytest.approx(0.0)


def test_no_car_in_the_box_costs_two_and_car_outside_does_not_help():
    p = torch.zeros((1, 8, 10))
    p[0, 6:, :] = 1.0                     # Car everywhere below the box, none inside
    assert box_projection_loss(p, boxes()).item() == pytest.approx(2.0)
    p[0, 2, 3:7] = 1.0                    # one full row of Car: every column filled, 1 of 3 rows
    assert box_projection_loss(p, boxes()).item() == pytest.approx(2 / 3)


def test_without_boxes_the_term_is_zero_with_a_gradient_path():
    p = torch.rand((2, 8, 10), requires_grad=True)
    loss = box_projection_loss(p, torch.zeros((2, 8, 10), dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and p.grad is not None and not p.grad.any()


def test_the_gradient_raises_car_inside_the_box_only():
    logits = torch.zeros((1, 8, 10), requires_grad=True)
    box_projection_loss(torch.sigmoid(logits), boxes()).backward()
    inside = boxes()[0]
    assert (logits.grad[0][inside] <= 0).all() and (logits.grad[0][inside] < 0).any()
    assert not logits.grad[0][~inside].any()


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="must both be"):
        box_projection_loss(torch.zeros((1, 8, 10)), torch.zeros((1, 8, 9), dtype=torch.bool))


def test_hard_negatives_cost_minus_log_of_not_car_on_the_negative_pixels_only():
    p = torch.full((1, 8, 10), 0.5)
    far = ~boxes()
    p[0][~far[0]] = 1.0                                 # certain Car inside the box costs nothing: it is not negative
    assert car_hard_negative_loss(p, far).item() == pytest.approx(-torch.log(torch.tensor(0.5)).item())
    p[0][far[0]] = 0.0
    assert car_hard_negative_loss(p, far).item() == pytest.approx(0.0, abs=1e-6)
    p[0][far[0]] = 1.0                                  # clamped: finite even at certain Car
    assert torch.isfinite(car_hard_negative_loss(p, far))


def test_the_hard_negative_gradient_lowers_car_on_negatives_only_and_is_zero_without_them():
    logits = torch.zeros((1, 8, 10), requires_grad=True)
    far = ~boxes()
    car_hard_negative_loss(torch.sigmoid(logits), far).backward()
    assert (logits.grad[0][far[0]] > 0).all() and not logits.grad[0][~far[0]].any()
    p = torch.rand((2, 8, 10), requires_grad=True)
    loss = car_hard_negative_loss(p, torch.zeros((2, 8, 10), dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and not p.grad.any()
    with pytest.raises(ValueError, match="must both be"):
        car_hard_negative_loss(torch.zeros((1, 8, 10)), torch.zeros((8, 10), dtype=torch.bool))
