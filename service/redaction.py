"""Secrets never reach a log line: every log record is scrubbed as it is created.

Why a record factory rather than a handler filter: filters attach to handlers, and a
handler added later (uvicorn's, a test's, an operator's) would not have it.  The
factory runs for every record of every logger.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["install_redaction", "redact"]

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),  # compact JWS/JWT
    re.compile(r"(?i)(\"?access_token\"?\s*[:=]\s*\"?)[^\"',\s}]+"),
]
_installed = False


def redact(text: str) -> str:
    """Replace bearer tokens, JWTs and access_token values by '[REDACTED]'."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


def install_redaction() -> None:
    """Wrap the log record factory once per process."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
