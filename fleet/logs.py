"""Logging filters."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied


class PermissionDeniedOneLine(logging.Filter):
    """django.request logs every PermissionDenied ("Forbidden (Permission denied): /path") with
    its traceback; a refused request is expected, not a bug: keep the line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PermissionDenied):
            record.exc_info = None
            record.exc_text = None
            reason = str(exc)
            if reason and reason not in record.getMessage():
                record.msg = f"{record.msg} — %s"
                record.args = (*(record.args or ()), reason)
        return True
