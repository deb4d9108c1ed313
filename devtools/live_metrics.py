"""The local stack's live figures: the EMF documents the functions print (see
:mod:`chalicelib.observability`), read from the children's output and added up per second,
for the demo page's chart (``GET /metrics.json`` of :mod:`devtools.stack`).

What CloudWatch would show, without CloudWatch: messages delivered per second and open
connections (``ConnectionsOpened`` − ``ConnectionsClosed``) over the last
:data:`WINDOW_SECONDS`, and the total of every metric since the stack started. Pure standard
library; thread-safe (one reader thread per child feeds it, the page's requests read it).
"""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional

#: seconds of history the chart shows
WINDOW_SECONDS = 60
EMF_PREFIX = '{"_aws"'


def parse_emf(line: str) -> Optional[Dict[str, Any]]:
    """The EMF document on one output line, or None when the line is not one (a log line,
    text, broken JSON, JSON without ``_aws.CloudWatchMetrics``)."""
    text = line.strip()
    if not text.startswith(EMF_PREFIX):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    meta = doc.get("_aws") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("CloudWatchMetrics"), list):
        return None
    return doc


def _metric_values(doc: Mapping[str, Any]) -> Dict[str, float]:
    """``{metric name: value}`` of one document (a list of values is added up)."""
    values: Dict[str, float] = {}
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for metric in directive.get("Metrics", []) if isinstance(directive, dict) else []:
            name = metric.get("Name") if isinstance(metric, dict) else None
            value = doc.get(name) if isinstance(name, str) else None
            if isinstance(value, list):
                value = sum(v for v in value if isinstance(v, (int, float)))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name] = values.get(name, 0) + value
    return values


class LiveMetrics:
    """Per-second sums of the EMF documents fed to it.

    Args:
        window: seconds of history kept for the chart.
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(self, window: int = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.window, self.clock = window, clock
        self._lock = threading.Lock()
        self._per_second: Dict[int, Dict[str, float]] = defaultdict(dict)
        self._totals: Dict[str, float] = {}
        self._open = 0.0
        self._open_at: Dict[int, float] = {}
        self.documents = 0

    def feed_line(self, line: str) -> bool:
        """Take one output line; True when it was an EMF document (now counted)."""
        doc = parse_emf(line)
        if doc is None:
            return False
        self.add(doc)
        return True

    def add(self, doc: Mapping[str, Any]) -> None:
        """Count one EMF document at the second of its ``Timestamp`` (else now)."""
        stamp = doc["_aws"].get("Timestamp")
        second = int(stamp / 1000) if isinstance(stamp, (int, float)) else int(self.clock())
        values = _metric_values(doc)
        with self._lock:
            self.documents += 1
            bucket = self._per_second[second]
            for name, value in values.items():
                bucket[name] = bucket.get(name, 0) + value
                self._totals[name] = self._totals.get(name, 0) + value
            change = values.get("ConnectionsOpened", 0) - values.get("ConnectionsClosed", 0)
            if change:
                self._open = max(0.0, self._open + change)
                self._open_at[second] = self._open
            oldest = int(self.clock()) - 10 * self.window
            for old in [s for s in self._per_second if s < oldest]:
                del self._per_second[old]

    def snapshot(self) -> Dict[str, Any]:
        """What the page draws::

            {"seconds": [epoch second, ...],            # the last `window` seconds
             "messages_per_second": [delivered, ...],   # MessagesDelivered per second
             "open_connections": [open, ...],           # at the end of each second
             "open": open now, "totals": {metric: total}, "documents": n}
        """
        now = int(self.clock())
        seconds = list(range(now - self.window + 1, now + 1))
        with self._lock:
            rates = [self._per_second.get(s, {}).get("MessagesDelivered", 0) for s in seconds]
            past = [s for s in self._open_at if s < seconds[0]]
            level = self._open_at[max(past)] if past else 0.0
            levels: List[float] = []
            for second in seconds:
                level = self._open_at.get(second, level)
                levels.append(level)
            return {"seconds": seconds, "messages_per_second": rates,
                    "open_connections": levels, "open": self._open,
                    "totals": dict(sorted(self._totals.items())), "documents": self.documents}
