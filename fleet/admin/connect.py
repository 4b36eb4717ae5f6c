"""The pieces the Microsoft connect flows share in the admin: the page of consent links (to copy,
or to download as CSV for the mailbox owners) and its CSV."""

from __future__ import annotations

import csv

from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from fleet.models import ConsentRequest


def links_page(
    model_admin, request, consent_requests: list[ConsentRequest], title: str, *, admin=False
):
    """The links to hand out: to mailbox owners, or (`admin`) to a tenant's administrator."""
    uids = "&".join(f"uid={cr.uid}" for cr in consent_requests)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "consent_requests": consent_requests,
        "for_admins": admin,
        "csv_url": f"{reverse('admin:fleet_consentrequest_links_csv')}?{uids}",
        "opts": ConsentRequest._meta,
    }
    return TemplateResponse(request, "admin/fleet/consent_links.html", context)


def links_csv(consent_requests) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="consent-links.csv"'
    writer = csv.writer(response)
    writer.writerow(["email", "kind", "consent_url", "status", "expires_at", "uid"])
    for cr in consent_requests:
        writer.writerow(
            [
                cr.target,
                cr.kind,
                cr.consent_url,
                cr.status,
                cr.expires_at.isoformat() if cr.expires_at else "",
                cr.uid,
            ]
        )
    return response
