"""How the command line logs: text (timestamped for the long-running bot commands) or JSON lines.

`depthcard watch` and `depthcard serve` run for hours, so their text lines start with a UTC
time; `--log-format json` writes one JSON object per record (time, level, logger, message,
and the exception when there is one) for log collectors. Set once, at the entry point.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from tqdm.auto import tqdm

LogFormat = Literal["text", "json"]
TEXT = "%(levelname)s %(name)s: %(message)s"
TIMESTAMPED = "%(asctime)s " + TEXT
LONG_RUNNING = frozenset({"watch", "serve"})


def _utc(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class UtcFormatter(logging.Formatter):
    """Text lines with an ISO-8601 UTC time (`2026-11-30T08:12:03.417Z`)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc(record)


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class BarSafeHandler(logging.StreamHandler):
    """A stderr handler that writes each line through `tqdm.write`.

    While an audit draws progress bars on the same terminal, tqdm clears them, the line is
    written on a line of its own, and the bars are drawn again below it; a record written
    straight to the stream would land behind the bar and leave it half-drawn in the scrollback.
    With no bar on the screen it is a plain stream write.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own contract: a failing handler never raises
            self.handleError(record)


def configure(level: int, log_format: LogFormat, command: str | None) -> None:
    """Send log records to stderr in `log_format`; text lines of LONG_RUNNING commands carry
    a UTC timestamp."""
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = UtcFormatter(TIMESTAMPED if command in LONG_RUNNING else TEXT)
    handler = BarSafeHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
