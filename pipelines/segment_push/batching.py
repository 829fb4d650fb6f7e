"""How many uids one add/remove call may carry, learned from the server's answers.

The API documents no limit, but a gateway or a tenant setting may impose one, answering 400 to a
call that is too large without saying so. Splitting every refused batch from the start costs a
refusal chain per batch (47 calls, 21 of them refused, where 17 would do for three segments at a
limit of 120). Instead, every answer narrows one interval: the largest size seen accepted and the
smallest seen refused. The next call is a binary-search probe inside it until the two meet, then
every call has the size found, and the interval is kept in the warehouse for the next push.

A 400 that names no uids may also mean one unknown uid the server did not name. A size at or
below one accepted during this push cannot be refused for its size, so such a batch is split to
isolate the uid instead; and once a single uid is isolated, the refusals that led there may have
been its doing, so the upper bound is forgotten (the accepted size stays) and found again if it is
real. Bounds kept from an earlier push are where a push starts, not proof: a server that lowered
its limit since then is searched again from what this push has seen accepted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchSizer:
    """The size of the next add/remove call: ``configured`` at most, within what the server showed."""

    configured: int
    accepted: int = 0
    refused: int | None = None
    proven: int = 0  # the largest size accepted during this push (``accepted`` may come from an earlier one)
    refusals: int = 0  # calls refused for their size during this push

    def __post_init__(self) -> None:
        if self.configured < 1:
            raise ValueError("batch_size must be at least 1")
        if self.refused is not None and self.refused <= self.accepted:
            self.refused = None

    @property
    def limit(self) -> int | None:
        """The size found (the largest accepted just below the smallest refused), or None while unknown."""
        if self.refused is not None and self.refused == self.accepted + 1:
            return self.accepted
        return None

    def next_size(self, remaining: int) -> int:
        """The next call's size: the limit once found, else a probe halfway between the bounds."""
        size = self.configured
        if self.refused is not None:
            size = min(size, self.accepted if self.limit is not None else (self.accepted + self.refused) // 2)
        return max(1, min(size, remaining))

    def took(self, size: int) -> None:
        """The server accepted a call of ``size`` uids."""
        self.accepted = max(self.accepted, size)
        self.proven = max(self.proven, size)
        if self.refused is not None and self.refused <= self.accepted:
            self.refused = None

    def may_be_too_big(self, size: int) -> bool:
        """Whether an unexplained refusal of ``size`` uids can be the size's fault."""
        return size > 1 and size > self.proven

    def too_big(self, size: int) -> None:
        """The server refused a call of ``size`` uids without naming any of them."""
        self.refusals += 1
        self.refused = size if self.refused is None else min(self.refused, size)
        if self.accepted >= size:
            self.accepted = self.proven

    def uid_refused(self) -> None:
        """A single uid was refused: earlier unexplained refusals may have been its doing."""
        self.refused = None
