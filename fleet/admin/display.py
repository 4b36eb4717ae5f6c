"""Small renderers shared by the admin pages: status badges and error codes with their hints."""

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from fleet import errors

BADGE_CLASS = {
    "active": "ok",
    "valid": "ok",
    "completed": "ok",
    "pending": "wait",
    "queued": "wait",
    "processing": "wait",
    "unverified": "wait",
    "paused": "wait",
    "error": "error",
    "invalid": "error",
    "failed": "error",
    "reauth_required": "warn",
    "expired": "warn",
    "disabled": "off",
    "cancelled": "off",
    "not_started": "off",
}


def badge(value: str, label: str) -> str:
    return format_html(
        '<span class="fleet-badge fleet-badge-{}">{}</span>', BADGE_CLASS.get(value, "off"), label
    )


def error_code(code: str) -> str:
    """The code, and under it what to do (the catalogue's hint) — visible, not only on hover;
    the message stays in the tooltip."""
    if not code:
        return "—"
    entry = errors.get(code)
    if entry is None:
        return format_html("<code>{}</code>", code)
    shown = format_html(
        '<code class="fleet-error" title="{}">{}</code><span class="fleet-hint">{}</span>',
        entry.message,
        code,
        entry.hint,
    )
    if code in MOVE_PLAN_CODES:  # Basic auth refused: the way out is the move plan
        return format_html(
            '{} <a href="{}">move plan</a>', shown, reverse("admin:fleet_moverun_plan")
        )
    return shown


def error_explained(code: str, message: str = "", when=None) -> str:
    """An object page's error: code, message (the particulars stored with it, else the
    catalogue's), what to do, and when it was seen."""
    if not code:
        return "—"
    entry = errors.get(code)
    return render_to_string(
        "fleet/error_explained.html",
        {
            "code": code,
            "message": message or (entry.message if entry else ""),
            "hint": entry.hint if entry else "",
            "when": when,
        },
    )


def sentence(*parts: str) -> str:
    """Form errors read as sentences: "line 2: not an address" → "Line 2: not an address."."""
    out = []
    for part in parts:
        part = (part or "").strip()
        if not part:
            continue
        part = part[0].upper() + part[1:]
        out.append(part if part[-1] in ".!?" else part + ".")
    return " ".join(out)


def truncated(value: str, css: str = "fleet-cut") -> str:
    """A long value cut to its cell's width by CSS, the whole of it in the tooltip (and in the
    text, for copying and searching the page)."""
    if not value:
        return "—"
    return format_html('<span class="{}" title="{}">{}</span>', css, value, value)


def short_time(moment) -> str:
    """"12-01 14:05" with the full date and time in the tooltip."""
    if moment is None:
        return "—"
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        local.strftime("%m-%d %H:%M"),
    )


MOVE_PLAN_CODES = {errors.BASIC_AUTH_DISABLED.code, errors.SMTP_AUTH_DISABLED.code}


def copyable(value: str, css: str = "fleet-cut fleet-cut-id") -> str:
    """A long id cut to a few characters (whole in the tooltip) with a button that copies it
    (static/fleet/copy.js)."""
    if not value:
        return "—"
    return format_html(
        '<span class="fleet-copyable"><span class="{}" title="{}">{}</span>'
        '<button type="button" class="fleet-copy fleet-copy-icon" data-copy="{}" '
        'title="Copy {}" aria-label="Copy">⧉</button></span>',
        css,
        value,
        value,
        value,
        value,
    )
