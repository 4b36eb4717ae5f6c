"""Bulk reconnect: "Reconnect all failing" for a workspace or a filtered selection of it.

Every OAuth mailbox of the selection in `reauth_required` (its refresh token was revoked or
expired: AADSTS50173, AADSTS700082) gets one user-consent request with its address as the
login_hint; a mailbox that already has an open one keeps it (reused, never a second link). The
requests are grouped in a `ReconnectRun`, so one page lists the links, downloads them as CSV and
e-mails them; its progress ("n of m reconnected") is read from the mailboxes' status, which the
consent callback (`consent._complete_user`) sets back to `active`.

The writes are a few statements per 500 mailboxes (one read of the open requests, two bulk
INSERTs), whatever the selection's size, in one transaction: a failure writes nothing.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import get_connection, send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from fleet import errors
from fleet.consent import consent_link, oauth_credential
from fleet.errors import FleetError
from fleet.models import (
    ConsentRequest,
    Mailbox,
    MailboxEvent,
    ReconnectItem,
    ReconnectRun,
    Workspace,
)

log = logging.getLogger(__name__)

CHUNK = 500
MAX_LINKS_PER_EMAIL = 500  # one message stays readable (and under mail servers' size limits)


def failing(mailboxes: QuerySet) -> QuerySet:
    """The mailboxes of `mailboxes` a consent reconnects: OAuth ones that need reauthorization."""
    return mailboxes.filter(
        auth_method=Mailbox.AuthMethod.OAUTH, status=Mailbox.Status.REAUTH_REQUIRED
    )


def start(
    workspace: Workspace,
    mailboxes: QuerySet | None = None,
    *,
    actor=None,
    selection: str = "",
    base_url: str | None = None,
) -> ReconnectRun:
    """One consent request per failing mailbox of `workspace` (of `mailboxes` when given; the
    caller has scoped them), reusing open ones, grouped in a new run. Raises FleetError
    NOTHING_TO_RECONNECT when none needs it, MICROSOFT_OAUTH_NOT_CONFIGURED without an OAuth
    app; both write nothing."""
    chosen = failing(Mailbox.objects.filter(workspace=workspace))
    if mailboxes is not None:
        chosen = chosen.filter(pk__in=mailboxes.values("pk"))
    ids = list(chosen.order_by("pk").values_list("pk", flat=True))
    if not ids:
        raise FleetError(errors.NOTHING_TO_RECONNECT)
    credential = oauth_credential(workspace)
    now = timezone.now()
    expires = now + timedelta(days=settings.CONSENT_REQUEST_TTL_DAYS)
    with transaction.atomic():
        run = ReconnectRun.objects.create(
            workspace=workspace,
            created_by=actor if getattr(actor, "pk", None) else None,
            selection=selection[:300],
            total=len(ids),
        )
        for first in range(0, len(ids), CHUNK):
            chunk = list(
                Mailbox.objects.filter(pk__in=ids[first : first + CHUNK])
                .only("pk", "uid", "email", "workspace_id")
                .order_by("pk")
            )
            reusable = {}
            for request in (
                ConsentRequest.objects.filter(
                    mailbox__in=chunk,
                    kind=ConsentRequest.Kind.USER,
                    status__in=ConsentRequest.OPEN_STATUSES,
                    expires_at__gt=now,
                )
                .order_by("mailbox_id", "-created_at")
                .only("pk", "mailbox")
            ):
                reusable.setdefault(request.mailbox_id, request)
            new = [
                ConsentRequest(
                    workspace=workspace,
                    kind=ConsentRequest.Kind.USER,
                    mailbox=mailbox,
                    credential=credential,
                    request_data={"reconnect_run": str(run.uid)},
                    created_by=run.created_by,
                    expires_at=expires,
                )
                for mailbox in chunk
                if mailbox.pk not in reusable
            ]
            for request in new:
                # The uid is made on instantiation, so the link is known before the INSERT.
                request.consent_url = consent_link(request, base_url)
            ConsentRequest.objects.bulk_create(new)
            made = {request.mailbox_id: request for request in new}
            ReconnectItem.objects.bulk_create(
                ReconnectItem(
                    run=run,
                    mailbox=mailbox,
                    email=mailbox.email,
                    consent_request=reusable.get(mailbox.pk) or made[mailbox.pk],
                    reused=mailbox.pk in reusable,
                )
                for mailbox in chunk
            )
    return run


@dataclass
class Progress:
    total: int
    reconnected: int  # the mailbox is `active` again
    still_failing: int  # still in reauth_required or error
    gone: int  # deleted or disabled meanwhile

    @property
    def percent(self) -> int:
        return round(100 * self.reconnected / self.total) if self.total else 100


def progress(run: ReconnectRun) -> Progress:
    """How far the run is, counted from its mailboxes' status now (one query)."""
    S = Mailbox.Status
    counts = run.items.aggregate(
        total=Count("id"),
        reconnected=Count("id", filter=Q(mailbox__status=S.ACTIVE)),
        failing=Count("id", filter=Q(mailbox__status__in=[S.REAUTH_REQUIRED, S.ERROR, S.PENDING])),
    )
    gone = counts["total"] - counts["reconnected"] - counts["failing"]
    return Progress(counts["total"], counts["reconnected"], counts["failing"], gone)


def items(run: ReconnectRun) -> QuerySet:
    """The run's mailboxes with their consent requests and current status, for pages and CSV."""
    return run.items.select_related("consent_request", "mailbox").order_by("email")


def csv_rows(run: ReconnectRun):
    """The links as CSV rows (a header first): addresses, links, states; never a secret."""
    yield ["email", "consent_url", "mailbox_status", "consent_status", "expires_at", "uid"]
    for item in items(run).iterator(chunk_size=1000):
        cr = item.consent_request
        yield [
            item.email,
            cr.consent_url if cr else "",
            item.mailbox.status if item.mailbox else "deleted",
            cr.status if cr else "",
            cr.expires_at.isoformat() if cr and cr.expires_at else "",
            cr.uid if cr else "",
        ]


def send_links(
    run: ReconnectRun,
    address: str,
    item_ids: list[int] | None = None,
    *,
    actor=None,
    via: str = "",
) -> int:
    """E-mail the links of the run (or of `item_ids` in it) whose mailbox still waits for its
    consent, in one message to `address`. Returns how many links were sent; raises FleetError
    VALIDATION_ERROR for a bad address, NOTHING_TO_RECONNECT when no link is left to send."""
    address = (address or "").strip()
    try:
        validate_email(address)
    except ValidationError:
        raise FleetError(errors.VALIDATION_ERROR, "Enter a valid e-mail address") from None
    chosen = items(run).filter(
        mailbox__status=Mailbox.Status.REAUTH_REQUIRED,
        consent_request__status__in=ConsentRequest.OPEN_STATUSES,
    )
    if item_ids is not None:
        chosen = chosen.filter(pk__in=item_ids)
    links = list(chosen[:MAX_LINKS_PER_EMAIL])
    if not links:
        raise FleetError(errors.NOTHING_TO_RECONNECT, "No link of this selection is still waiting")
    one = len(links) == 1
    subject = (
        f"Reconnect {links[0].email} to {run.workspace.name}"
        if one
        else f"Reconnect {len(links)} mailboxes to {run.workspace.name}"
    )
    lines = [
        "Microsoft needs a fresh sign-in for "
        + ("this mailbox" if one else "these mailboxes")
        + " before mail can be sent from "
        + ("it" if one else "them")
        + " again. Open each link, sign in as the mailbox shown and accept.",
        "",
    ]
    for item in links:
        cr = item.consent_request
        expiry = f" (valid until {cr.expires_at:%Y-%m-%d %H:%M} UTC)" if cr.expires_at else ""
        lines += [f"{item.email}{expiry}", cr.consent_url, ""]
    lines.append("A link can be opened again if a sign-in fails. Sent from Fleet.")
    try:
        send_mail(
            subject,
            "\n".join(lines),
            settings.DEFAULT_FROM_EMAIL,
            [address],
            # Django's SMTP backend waits forever by default: a person is waiting on this page.
            connection=get_connection(timeout=getattr(settings, "EMAIL_TIMEOUT", None) or 15),
        )
    except (OSError, smtplib.SMTPException) as failure:
        log.warning("Consent links of reconnect run %s not e-mailed: %s", run.pk, failure)
        raise FleetError(errors.EMAIL_NOT_SENT, f"The e-mail was not sent: {failure}") from None
    now = timezone.now()
    ReconnectItem.objects.filter(pk__in=[item.pk for item in links]).update(
        emailed_to=address[:254], emailed_at=now
    )
    # Links that sign a mailbox in went to an address outside Fleet: each mailbox's history says so.
    MailboxEvent.objects.bulk_create(
        MailboxEvent(
            workspace_id=run.workspace_id,
            mailbox_id=item.mailbox_id,
            email=item.email,
            kind=MailboxEvent.Kind.NOTE,
            message=f"Reconnect link e-mailed to {address}",
            actor=actor if getattr(actor, "pk", None) else None,
            via=via,
            created_at=now,
        )
        for item in links
    )
    return len(links)
