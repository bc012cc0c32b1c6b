"""Reviewing a change: plan the working tree against a git ref, and render the difference.

`civflow.review.diff.compare` builds the one model (`Review`) that the PR comment
(`civflow.review.comment`), `plan --base --format json` and the HTML report read.
"""

from __future__ import annotations

from civflow.review.diff import (
    FieldChange,
    InstanceChange,
    PipelineReview,
    Review,
    compare,
)

__all__ = ["FieldChange", "InstanceChange", "PipelineReview", "Review", "compare"]
