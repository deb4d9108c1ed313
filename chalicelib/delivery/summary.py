"""Delivery summaries: what a fan-out did, counted per outcome.

A summary is ``{"delivered": int, "gone": int, "failed": int, "retryable": int}``
(``retryable`` counts the part of ``failed`` worth retrying later); the outcome names are the
sender's (:mod:`chalicelib.delivery.sender`). Used by the poster, the shards and the push engine
alike, so none of them imports another for these.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping

from chalicelib.delivery.sender import DELIVERED, FAILED, GONE, RETRYABLE  # noqa: F401

Summary = Dict[str, int]


def empty_summary() -> Summary:
    """``{"delivered": 0, "gone": 0, "failed": 0, "retryable": 0}``."""
    return {DELIVERED: 0, GONE: 0, FAILED: 0, RETRYABLE: 0}


def merge(*summaries: Mapping[str, int]) -> Summary:
    """Add summaries key by key."""
    total = empty_summary()
    for summary in summaries:
        for key in total:
            total[key] += int(summary.get(key, 0))
    return total


def tally(outcomes: Iterable[str]) -> Summary:
    """The delivery summary of per-connection outcomes
    (:func:`chalicelib.delivery.post.post_outcomes`)."""
    summary = empty_summary()
    for outcome in outcomes:
        if outcome == RETRYABLE:
            summary[FAILED] += 1
            summary[RETRYABLE] += 1
        else:
            summary[outcome] += 1
    return summary

