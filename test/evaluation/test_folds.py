"""Leave-one-stretch-out folds: contiguity, guard bands, disjointness, coverage, the ahvmousavi fold, determinism;
on synthetic frame lists and on the real carla_unlabelled folder."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from carla_seg_ros.evaluation.folds import DEFAULT_GUARD, MIN_GUARD, fold_split, make_folds
from carla_seg_ros.unlabelled import GUARD, HELD_OUT, POOL, UnlabelledFrame, read_unlabelled


def synthetic(n_relke=200, step=17, weathers=("day", "night", "rain", "fog")):
    frames = [UnlabelledFrame(f"relke_{300 + step * i:06d}.jpg", Path("x"), "relke", 300 + step * i)
              for i in range(n_relke)]
    for w, weather in enumerate(weathers):
        frames += [UnlabelledFrame(f"ahvmousavi_{weather}_{50 * w + i}.jpg", Path("x"), f"ahvmousavi_{weather}",
                                   50 * w + i, weather) for i in range(50)]
    return frames


def check_plan(frames, plan):
    """Every property the brief asks of the folds, on one plan."""
    by_name = {fr.name: fr for fr in frames}
    # coverage and disjointness: every frame in exactly one fold
    seen = [n for f in plan.folds for n in f.names]
    assert sorted(seen) == sorted(by_name) and len(seen) == len(set(seen))
    stretches = [f for f in plan.folds if f.stretch]
    assert len(stretches) == plan.stretches >= 4
    # contiguity: a stretch fold is one run of its recording in frame-number order, nothing else in between
    for f in stretches:
        for seq, first, last in f.spans:
            inside = {fr.name for fr in frames if fr.sequence == seq and first <= fr.number <= last}
            assert inside == {n for n in f.names if by_name[n].sequence == seq}
    # the ahvmousavi frames, every weather, form a fold of their own
    ahv = plan.fold("ahvmousavi")
    assert not ahv.stretch
    assert set(ahv.names) == {fr.name for fr in frames if fr.name.startswith("ahvmousavi_")}
    assert {by_name[n].weather for n in ahv.names} == {"day", "night", "rain", "fog"}
    for f in plan.folds:
        split = fold_split(plan, frames, f.index)
        held = [n for n, p in split.items() if p == HELD_OUT]
        assert sorted(held) == sorted(f.names)
        # guards: no trained frame of the same recording within the guard band of the held-out fold,
        # and every frame in that band is a guard frame (neither trained on nor scored)
        for seq, first, last in f.spans:
            for fr in frames:
                if fr.sequence != seq or fr.name in f.names:
                    continue
                near = first - plan.guard <= fr.number <= last + plan.guard
                assert split[fr.name] == (GUARD if near else POOL), fr.name
        assert set(split.values()) <= {HELD_OUT, GUARD, POOL}
        if f.stretch and 0 < f.index < plan.stretches - 1:
            assert any(p == GUARD for p in split.values()), "an inner stretch must have guard frames"


def test_synthetic_folds_have_every_property():
    frames = synthetic()
    plan = make_folds(frames)
    assert plan.guard == DEFAULT_GUARD >= MIN_GUARD
    check_plan(frames, plan)
    assert [f.name for f in plan.folds] == ["stretch1", "stretch2", "stretch3", "stretch4", "ahvmousavi"]
    assert [len(f.names) for f in plan.folds] == [50, 50, 50, 50, 200]
    # fold 2 held out: 500 frame numbers at 17 apart = 29 frames of guard on each side
    split = fold_split(plan, frames, 1)
    assert sum(p == GUARD for p in split.values()) == 2 * 29
    assert sum(p == POOL for p in split.values()) == len(frames) - 50 - 58


def test_folds_do_not_depend_on_input_order():
    frames = synthetic()
    shuffled = frames[:]
    random.Random(3).shuffle(shuffled)
    assert make_folds(frames) == make_folds(shuffled)
    assert fold_split(make_folds(frames), frames, 2) == fold_split(make_folds(shuffled), shuffled, 2)


def test_more_stretches_and_a_wider_guard():
    frames = synthetic(n_relke=301)
    plan = make_folds(frames, stretches=6, guard=1000)
    check_plan(frames, plan)
    assert sum(len(f.names) for f in plan.folds if f.stretch) == 301


def test_fold_lookup_and_bad_arguments():
    frames = synthetic()
    plan = make_folds(frames)
    assert plan.fold("stretch3") is plan.fold(2) is plan.fold("2")
    with pytest.raises(ValueError, match="out of range"):
        plan.fold(9)
    with pytest.raises(ValueError, match="no fold named"):
        plan.fold("stretch9")
    with pytest.raises(ValueError, match=">= 1"):
        make_folds(frames, stretches=0)
    with pytest.raises(ValueError, match="guard"):
        make_folds(frames, guard=-1)
    with pytest.raises(ValueError, match="fewer than"):
        make_folds(synthetic(n_relke=3))


def test_a_split_that_misses_fold_frames_is_an_error():
    frames = synthetic()
    plan = make_folds(frames)
    with pytest.raises(ValueError, match="not given"):
        fold_split(plan, frames[1:], 0)


def test_real_folder(unlabelled_dir):
    frames = read_unlabelled(unlabelled_dir)
    plan = make_folds(frames)
    check_plan(frames, plan)
    assert len(plan.fold("ahvmousavi").names) == 200
    sizes = [len(f.names) for f in plan.folds if f.stretch]
    assert sum(sizes) == 1504 and max(sizes) - min(sizes) <= 1
    # the guard band is at least 100 source frames counted as kept frames' numbers (every 4th source file kept)
    split = fold_split(plan, frames, 1)
    guard = sorted(fr.number for fr in frames if split[fr.name] == GUARD)
    assert len(guard) >= 2 * (MIN_GUARD // 4)
