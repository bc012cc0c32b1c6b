"""`--max-cost` as a hard cap: reserve an instance's price before its POST, settle after.

Work in flight counts: the sum of what was charged and what is reserved never passes
the cap, so a fan-out of concurrent submissions cannot overshoot it.
"""

from __future__ import annotations

import math

__all__ = ["Budget", "OverBudget"]


class OverBudget(Exception):
    """The next reservation would pass the cap (internal; the run turns it into a stop)."""


class Budget:
    def __init__(self, limit: float | None) -> None:
        if limit is not None and (not math.isfinite(limit) or limit < 0):
            raise ValueError(f"a cost cap is a finite number of 0 or more, not {limit!r}")
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0

    def reserve(self, amount: float) -> None:
        if self.limit is None:
            return
        if not math.isfinite(amount) or amount < 0:
            raise OverBudget(f"--max-cost {self.limit:g}: the next workflow has no usable "
                             f"price ({amount!r}), so it is not submitted under a cap")
        if self.spent + self.reserved + amount > self.limit + 1e-9:
            raise OverBudget(
                f"--max-cost {self.limit:g}: spent {self.spent:g} Buzz with "
                f"{self.reserved:g} reserved in flight; the next workflow is estimated at "
                f"{amount:g}")
        self.reserved += amount

    def room(self) -> float:
        """What can still be reserved (infinite without a cap)."""
        if self.limit is None:
            return math.inf
        return self.limit - self.spent - self.reserved + 1e-9

    def release(self, amount: float) -> None:
        self.reserved = max(0.0, self.reserved - amount)

    def settle(self, reserved: float, actual: float) -> None:
        """A reservation became a charge (the API's `cost.total`, tips included)."""
        self.release(reserved)
        if math.isfinite(actual) and actual > 0:
            self.spent += actual
