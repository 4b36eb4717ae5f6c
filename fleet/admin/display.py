"""Small renderers shared by the admin pages: status badges and error codes with their hints."""

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
    """The code, with the catalogue's message and hint on hover."""
    if not code:
        return "—"
    entry = errors.get(code)
    if entry is None:
        return format_html("<code>{}</code>", code)
    shown = format_html(
        '<code class="fleet-error" title="{} — {}">{}</code>', entry.message, entry.hint, code
    )
    if code in MOVE_PLAN_CODES:  # Basic auth refused: the way out is the move plan
        from django.urls import reverse

        return format_html(
            '{} <a href="{}">move plan</a>', shown, reverse("admin:fleet_moverun_plan")
        )
    return shown


MOVE_PLAN_CODES = {errors.BASIC_AUTH_DISABLED.code, errors.SMTP_AUTH_DISABLED.code}
