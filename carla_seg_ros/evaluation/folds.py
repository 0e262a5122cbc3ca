"""Leave-one-stretch-out folds of the unlabelled frames: the split every recipe choice is judged on.

Why not the interleaved held-out blocks of ``unlabelled.split_unlabelled``: they sit seconds away from training
blocks in the same streets, so they reward a recipe that fits the drive rather than one that carries to the next
stretch of it (a later stretch scored about 15 points lower for v2 than those blocks). Here:

* every recording (*sequence*, see ``unlabelled.sequence_and_number``) of a source not listed in ``own_fold`` is
  cut, in source frame-number order (its time), into ``stretches`` contiguous runs of equal frame count; fold i is
  the i-th run (``stretch1`` .. ``stretchK``; with several such recordings, the i-th run of each);
* every source in ``own_fold`` (default ``ahvmousavi``: 4 weather presets x 50 frames, one short drive each) forms
  one fold of its own, named after the source: it shows weathers the stretches barely have, and has no boxes,
  so it reports the Car share only;
* **guard band**: when fold i is held out, every other frame of the same recording within ``guard`` source frame
  numbers of fold i's first or last frame is neither trained on nor scored. The default 500 frame numbers is about
  29 kept ``relke_`` frames (they are about 17 frame numbers apart) and about 110 files of the source folder (every
  4th file was kept), so it is at least 100 source frames counted either way.

Every frame belongs to exactly one fold; with a fixed model (``evaluate-boxes --folds``) every frame is scored
once, in its fold. The split depends only on the names (not on the order the frames are given in), so it is the
same on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

from carla_seg_ros.unlabelled import GUARD, HELD_OUT, POOL, UnlabelledFrame

DEFAULT_STRETCHES = 4
DEFAULT_GUARD = 500                 # source frame numbers, see the module docstring
MIN_GUARD = 100
OWN_FOLD_SOURCES = ("ahvmousavi",)


@dataclass(frozen=True)
class Fold:
    name: str
    index: int
    names: tuple[str, ...]                           # frame names, in (sequence, number) order
    spans: tuple[tuple[str, int, int], ...]          # (sequence, first number, last number) per recording it cuts
    stretch: bool                                    # a contiguous stretch (True) or a source's own fold (False)


@dataclass(frozen=True)
class FoldPlan:
    folds: tuple[Fold, ...]
    guard: int
    stretches: int
    own_fold: tuple[str, ...]

    def fold(self, key: str | int) -> Fold:
        """A fold by index (int or digit string) or by name; a clear ValueError otherwise."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            i = int(key)
            if not 0 <= i < len(self.folds):
                raise ValueError(f"fold index {i} out of range: 0..{len(self.folds) - 1} ({self.names()})")
            return self.folds[i]
        for f in self.folds:
            if f.name == key:
                return f
        raise ValueError(f"no fold named {key!r}: {self.names()}")

    def names(self) -> str:
        return ", ".join(f"{f.index} {f.name}" for f in self.folds)

    def fold_of(self) -> dict[str, str]:
        return {n: f.name for f in self.folds for n in f.names}

    def describe(self) -> dict:
        """JSON-ready: the rule and every fold's frame count and span."""
        return {"rule": f"leave-one-stretch-out: each recording cut into {self.stretches} contiguous stretches by "
                        f"source frame number; {', '.join(self.own_fold) or 'no source'} its own fold; guard "
                        f"{self.guard} source frame numbers either side of the held-out fold",
                "guard_frame_numbers": self.guard, "stretches": self.stretches, "own_fold": list(self.own_fold),
                "folds": [{"index": f.index, "name": f.name, "frames": len(f.names), "stretch": f.stretch,
                           "spans": [list(s) for s in f.spans]} for f in self.folds]}


def make_folds(frames: list[UnlabelledFrame], stretches: int = DEFAULT_STRETCHES, guard: int = DEFAULT_GUARD,
               own_fold: tuple[str, ...] = OWN_FOLD_SOURCES) -> FoldPlan:
    """The folds of ``frames`` (see the module docstring)."""
    if stretches < 1:
        raise ValueError(f"the number of stretch folds must be >= 1, got {stretches}")
    if guard < 0:
        raise ValueError(f"the guard band must be >= 0 source frame numbers, got {guard}")
    names = [fr.name for fr in frames]
    if len(set(names)) != len(names):
        raise ValueError("frame names must be unique")
    ordered = sorted(frames, key=lambda fr: (fr.sequence, fr.number, fr.name))
    by_seq: dict[str, list[UnlabelledFrame]] = {}
    for fr in ordered:
        if fr.source not in own_fold:
            by_seq.setdefault(fr.sequence, []).append(fr)
    runs: list[list[UnlabelledFrame]] = [[] for _ in range(stretches)]
    spans: list[list[tuple[str, int, int]]] = [[] for _ in range(stretches)]
    for seq, seq_frames in sorted(by_seq.items()):
        n = len(seq_frames)
        if n < stretches:
            raise ValueError(f"recording {seq!r} has {n} frames, fewer than the {stretches} stretch folds")
        for i in range(stretches):
            part = seq_frames[i * n // stretches:(i + 1) * n // stretches]
            runs[i] += part
            spans[i].append((seq, part[0].number, part[-1].number))
    folds = [Fold(f"stretch{i + 1}", i, tuple(fr.name for fr in runs[i]), tuple(spans[i]), True)
             for i in range(stretches) if runs[i]]
    for source in own_fold:
        members = [fr for fr in ordered if fr.source == source]
        if members:
            seqs = sorted({fr.sequence for fr in members})
            fold_spans = tuple((s, min(fr.number for fr in members if fr.sequence == s),
                                max(fr.number for fr in members if fr.sequence == s)) for s in seqs)
            folds.append(Fold(source, len(folds), tuple(fr.name for fr in members), fold_spans, False))
    if not folds:
        raise ValueError("no frames to cut into folds")
    return FoldPlan(tuple(folds), guard, stretches, tuple(own_fold))


def fold_split(plan: FoldPlan, frames: list[UnlabelledFrame], held: str | int) -> dict[str, str]:
    """name -> HELD_OUT (the frames of fold ``held``), GUARD (other frames of its recordings within the guard band)
    or POOL (the frames to train on): the same codes as ``unlabelled.split_unlabelled``, so ``frames_of`` works."""
    fold = plan.fold(held)
    members = set(fold.names)
    spans = {seq: (first, last) for seq, first, last in fold.spans}
    split = {}
    for fr in frames:
        if fr.name in members:
            split[fr.name] = HELD_OUT
            continue
        span = spans.get(fr.sequence)
        near = span is not None and span[0] - plan.guard <= fr.number <= span[1] + plan.guard
        split[fr.name] = GUARD if near else POOL
    missing = members - set(split)
    if missing:
        raise ValueError(f"fold {fold.name} names {len(missing)} frames not given (e.g. {sorted(missing)[0]})")
    return split
