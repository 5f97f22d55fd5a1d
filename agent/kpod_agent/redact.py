"""Credentials never leave the agent: `user:password@` in any URL shown in
/config or written to the log becomes `***@`.

A URL may carry credentials (a `kubeletURL` with basic auth, a proxy URL);
requests and urllib3 put the URL they were given into exception texts,
which end up in discovery's `lastError` and in warnings.
"""
from __future__ import annotations

import logging
import re
from typing import Any

# scheme://userinfo@ — userinfo up to the last "@" before the host's end
# (a raw "@" in a password is a malformed URL, but must not leak either).
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***`."""
    if "@" not in text:
        return text
    return _USERINFO.sub(r"\g<scheme>***@", text)


def redact_all(value: Any) -> Any:
    """Every string in a JSON-like structure redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """On a handler: every record's message and traceback redacted, whatever
    library logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (default: the root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
