"""Pairing two live streams of stamped frames by header stamp (no ROS here).

The one pairing of live streams in this package: seg_eval_node (masks against ground truth, through
online.OnlineEvaluation) and the dataset recorders (`carla-seg record`, `carla-seg bag-to-dataset`: camera against
ground truth) both use ``StampPairer``. Frames arrive in any order, each with its header stamp. A frame pairs with
the waiting frame of the other stream whose stamp is nearest, within the tolerance; each frame is used once (as
`bag-eval`'s ``pair_stamps`` does for a whole bag). A frame whose partner has not come once the stream is
``match_window`` further on (by stamp) is unmatched; ``finish()`` makes every frame still waiting unmatched.

A frame passed in as ``None`` (the caller could not decode it and has counted it) still takes its partner, so
that partner is not counted a second time as unmatched; it is never reported as unmatched itself.
"""
from __future__ import annotations

from typing import Any, Callable

FIRST, SECOND = 0, 1


class StampPairer:
    """Two streams (``FIRST``, ``SECOND``); ``on_pair(first_stamp, first, second_stamp, second)`` for each pair,
    ``on_unmatched(side, stamp)`` for each non-None frame that found no partner."""

    def __init__(self, tolerance_ns: int, match_window_ns: int,
                 on_pair: Callable[[int, Any, int, Any], None],
                 on_unmatched: Callable[[int, int], None] = lambda side, stamp: None):
        self.tolerance_ns = int(tolerance_ns)
        self.match_window_ns = int(match_window_ns)
        self.on_pair = on_pair
        self.on_unmatched = on_unmatched
        self.pending: tuple[dict, dict] = ({}, {})     # per side: stamp -> frame waiting for its partner
        self.newest: int | None = None

    def add(self, side: int, stamp: int, item) -> None:
        mine, theirs = self.pending[side], self.pending[1 - side]
        partner = self._nearest(theirs, stamp)
        if partner is not None:
            other = theirs.pop(partner)
            if side == FIRST:
                self.on_pair(stamp, item, partner, other)
            else:
                self.on_pair(partner, other, stamp, item)
        elif stamp in mine:          # a second frame with the same stamp: the first keeps its place
            if item is not None:
                self.on_unmatched(side, stamp)
        else:
            mine[stamp] = item
        self.newest = stamp if self.newest is None else max(self.newest, stamp)
        self.expire(self.newest - self.match_window_ns)

    def _nearest(self, pending: dict, stamp: int) -> int | None:
        best = None
        for other in pending:
            d = abs(other - stamp)
            if d <= self.tolerance_ns and (best is None or d < abs(best - stamp)):
                best = other
        return best

    def expire(self, older_than: int) -> None:
        """Frames stamped before ``older_than`` stop waiting: unmatched."""
        for side in (FIRST, SECOND):
            pending = self.pending[side]
            for stamp in sorted(s for s in pending if s < older_than):
                if pending.pop(stamp) is not None:
                    self.on_unmatched(side, stamp)

    def finish(self) -> None:
        """End of the streams: everything still waiting is unmatched."""
        self.expire(2**63 - 1)

    def waiting(self, side: int) -> int:
        return sum(item is not None for item in self.pending[side].values())
