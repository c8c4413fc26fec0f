"""structlog set-up: human lines on a terminal, JSON on request, the journal under
systemd, syslog for daemons, or a file.

Every log line carries bound context (``host=``, ``peer=``).  Nothing on the
per-packet path logs: counters are reported when a session ends.  A last processor
drops any key that looks like a secret, as a guard against a careless call site.

Logs never vanish: :func:`choose_destination` picks where they go before the daemon
detaches, and a destination that cannot be reached is a start-up error
(:class:`LogSetupError`), which the CLI prints on the terminal.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import stat
import sys
import syslog
from dataclasses import dataclass
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor

SYSLOG_SOCKET_ENV = "VT_SYSLOG_SOCKET"
"""Where syslog listens (default ``/dev/log``); set for a chroot or a test's own socket."""
DEFAULT_SYSLOG_SOCKET = "/dev/log"

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


def redact_secrets(_logger: Any, _name: str, event: EventDict) -> EventDict:
    for key in SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


class LogSetupError(Exception):
    """Logs cannot go where they must (one line, for the terminal)."""


def _kv_renderer() -> Any:
    return structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True)


def _level_of(event: EventDict, name: str) -> str:
    event.pop("timestamp", None)
    return event.pop("level", name)


class SyslogRenderer:
    """Sends ``key=value`` lines to the syslog socket; returns the line so the chain can go on."""

    def __init__(self, handler: logging.handlers.SysLogHandler) -> None:
        self._handler = handler
        self._kv = _kv_renderer()

    def __call__(self, logger: Any, name: str, event: EventDict) -> str:
        level = _level_of(event, name)
        line = self._kv(logger, name, event)
        # The PID is read per line: the daemon forks after logging is set up.
        self._handler.ident = f"vt[{os.getpid()}]: "
        self._handler.handle(logging.makeLogRecord(
            {"msg": line, "levelname": level.upper(), "levelno": _LEVELS.get(level, 20)}))
        return line


class JournalRenderer:
    """``<priority>key=value`` lines on stderr, which journald reads as the line's level."""

    def __init__(self) -> None:
        self._kv = _kv_renderer()

    def __call__(self, logger: Any, name: str, event: EventDict) -> str:
        level = _level_of(event, name)
        return f"<{_PRIORITY.get(level, syslog.LOG_INFO)}>{self._kv(logger, name, event)}"


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def open_syslog(facility: str | int = "daemon") -> logging.handlers.SysLogHandler:
    """A connection to the syslog socket, or LogSetupError when nothing listens there."""
    fac = FACILITIES.get(str(facility), facility if isinstance(facility, int) else None)
    path = os.environ.get(SYSLOG_SOCKET_ENV) or DEFAULT_SYSLOG_SOCKET
    errors: list[OSError] = []
    # The handler itself ignores an unreachable socket (as openlog(3) does): probe first.
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError as exc:
                errors.append(exc)
                continue
        # syslog's LOG_* facilities are shifted; the handler shifts them itself.
        return logging.handlers.SysLogHandler(
            address=path, facility=(fac if fac is not None else syslog.LOG_DAEMON) >> 3,
            socktype=kind)
    error = errors[0]
    raise LogSetupError(f"syslog is unreachable ({path}: {error.strerror or error})")


def journal_stream(fd: int = 2) -> bool:
    """stderr is systemd's journal stream (``JOURNAL_STREAM`` names its device and inode)."""
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def stderr_is_socket() -> bool:
    """As from a real inetd: stderr is the client's connection, no place for log lines."""
    try:
        return stat.S_ISSOCK(os.fstat(2).st_mode)
    except OSError:
        return True


@dataclass
class Destination:
    """Where log lines go: ``fmt`` is console, json, journal or syslog."""

    fmt: str
    stream: IO[str] | None = None
    syslog: logging.handlers.SysLogHandler | None = None
    note: str | None = None
    """A warning to log first (a fallback that was taken)."""
    facility: str | int = "daemon"
    """The syslog facility (what a worker process logs to as well)."""


def choose_destination(fmt: str = "auto", *, detach: bool = False, inetd: bool = False,
                       log_file: str | None = None, facility: str | int = "daemon") -> Destination:
    """The journal under systemd, else syslog for a daemon, else stderr, or ``log_file``.

    ``detach``: stderr will be /dev/null, so it is no destination.  ``inetd``: syslog by
    default, stderr only when it is not the client's socket.  Raises LogSetupError when
    the lines would be lost."""
    if log_file:
        if fmt == "syslog":
            raise LogSetupError("--log-file and --log-format syslog exclude each other")
        try:
            stream = open(log_file, "a", buffering=1)  # noqa: SIM115 (lives as long as vt)
        except OSError as exc:
            raise LogSetupError(f"cannot open log file {log_file}: {exc.strerror}") from None
        return Destination("json" if fmt == "json" else "console", stream=stream)
    stderr_ok = not detach and not (inetd and stderr_is_socket())
    if fmt in ("console", "json"):
        if not stderr_ok:
            raise LogSetupError(f"--log-format {fmt} writes to stderr, which is closed when vt "
                                "detaches: add -n, or give --log-file FILE")
        return Destination(fmt, stream=sys.stderr)
    if fmt == "auto" and stderr_ok and journal_stream():
        return Destination("journal", stream=sys.stderr)
    if fmt == "syslog" or detach or inetd:
        try:
            return Destination("syslog", syslog=open_syslog(facility), facility=facility)
        except LogSetupError as exc:
            if fmt == "syslog" or not stderr_ok:
                hint = "" if inetd else ": add -n, or give --log-file FILE"
                raise LogSetupError(f"cannot log: {exc}{hint}") from None
            return Destination("auto", stream=sys.stderr, note=f"{exc}; logging to stderr")
    return Destination("auto", stream=sys.stderr)


ACTIVE: tuple[Destination, str] | None = None
"""The destination and level :func:`configure` set (a worker process logs the same way)."""


def configure(fmt: str | Destination = "auto", level: str = "info",
              syslog_facility: str | None = None, stream=None) -> None:
    """Configure structlog once for the process.

    ``fmt``: a :class:`Destination`, or ``console`` (human), ``json``, ``auto`` (console;
    colours on a terminal), ``journal`` or ``syslog`` (on ``stream``, or stderr)."""
    global ACTIVE
    dest = fmt if isinstance(fmt, Destination) else Destination(fmt, stream=stream)
    ACTIVE = (dest, level)
    stream = dest.stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact_secrets,
    ]
    fmt = dest.fmt
    if fmt == "syslog":
        handler = dest.syslog or open_syslog(syslog_facility or "daemon")
        processors: list[Processor] = [*shared, SyslogRenderer(handler)]
        factory: Any = structlog.ReturnLoggerFactory()
    elif fmt == "journal":
        processors = [*shared, JournalRenderer()]
        factory = structlog.WriteLoggerFactory(file=stream)
    else:
        stamp = structlog.processors.TimeStamper(fmt="iso" if fmt == "json" else "%H:%M:%S",
                                                 utc=fmt == "json")
        renderer: Any
        if fmt == "json":
            renderer = structlog.processors.JSONRenderer(sort_keys=False)
        else:
            colors = fmt == "auto" and hasattr(stream, "isatty") and stream.isatty()
            renderer = structlog.dev.ConsoleRenderer(colors=colors,
                                                     exception_formatter=structlog.dev.plain_traceback)
        processors = [*shared, stamp, renderer]
        # One write per line: a master and its workers share stderr, and print()'s two
        # writes (the line, then its newline) interleaved two JSON records on one line.
        factory = structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    if dest.note:
        structlog.get_logger("vt").warning("log destination changed", detail=dest.note)
