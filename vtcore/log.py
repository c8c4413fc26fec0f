"""structlog set-up: human lines on a terminal, JSON on request, syslog for daemons.

Every log line carries bound context (``host=``, ``peer=``).  Nothing on the
per-packet path logs: counters are reported when a session ends.  A last processor
drops any key that looks like a secret, as a guard against a careless call site.
"""

from __future__ import annotations

import logging
import sys
import syslog
from typing import Any

import structlog

SECRET_KEYS = frozenset({"passwd", "password", "key", "secret", "challenge", "chal",
                         "response", "transcript"})

FACILITIES = {
    "auth": syslog.LOG_AUTH, "cron": syslog.LOG_CRON, "daemon": syslog.LOG_DAEMON,
    "kern": syslog.LOG_KERN, "lpr": syslog.LOG_LPR, "mail": syslog.LOG_MAIL,
    "news": syslog.LOG_NEWS, "syslog": syslog.LOG_SYSLOG, "user": syslog.LOG_USER,
    "uucp": syslog.LOG_UUCP, **{f"local{i}": getattr(syslog, f"LOG_LOCAL{i}") for i in range(8)},
}
_PRIORITY = {"debug": syslog.LOG_DEBUG, "info": syslog.LOG_INFO, "warning": syslog.LOG_WARNING,
             "error": syslog.LOG_ERR, "critical": syslog.LOG_CRIT}


def redact_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


class SyslogRenderer:
    """Sends ``key=value`` lines to syslog; returns the line so the chain can go on."""

    def __init__(self, facility: str | int = "daemon") -> None:
        fac = FACILITIES.get(str(facility), facility if isinstance(facility, int) else None)
        syslog.openlog("vt", syslog.LOG_PID, fac if fac is not None else syslog.LOG_DAEMON)
        self._kv = structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True)

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> str:
        level = event.pop("level", name)
        event.pop("timestamp", None)
        line = self._kv(logger, name, event)
        syslog.syslog(_PRIORITY.get(level, syslog.LOG_INFO), line)
        return line


def configure(fmt: str = "auto", level: str = "info", syslog_facility: str | None = None,
              stream=None) -> None:
    """Configure structlog once for the process.

    ``fmt``: ``console`` (human), ``json``, ``auto`` (console; colours on a terminal),
    or ``syslog``."""
    stream = stream or sys.stderr
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact_secrets,
    ]
    if fmt == "syslog":
        renderer: Any = SyslogRenderer(syslog_facility or "daemon")
        processors = [*shared, renderer]
        factory: Any = structlog.ReturnLoggerFactory()
    else:
        stamp = structlog.processors.TimeStamper(fmt="iso" if fmt == "json" else "%H:%M:%S",
                                                 utc=fmt == "json")
        if fmt == "json":
            renderer = structlog.processors.JSONRenderer(sort_keys=False)
        else:
            colors = fmt == "auto" and hasattr(stream, "isatty") and stream.isatty()
            renderer = structlog.dev.ConsoleRenderer(colors=colors,
                                                     exception_formatter=structlog.dev.plain_traceback)
        processors = [*shared, stamp, renderer]
        factory = structlog.PrintLoggerFactory(file=stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
