"""Public pages of the OAuth consent flow: the consent link a mailbox owner opens, and the
callback Microsoft redirects to. The people here are not Fleet users: no login, and every
outcome is a clear page with what to do, never a traceback."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from fleet import consent, errors
from fleet.errors import FleetError
from fleet.models import ConsentRequest, Credential, Mailbox


def fleet_links(request: HttpRequest, outcome: consent.ConsentResult) -> dict[str, str]:
    """For a visitor signed in to Fleet (staff who opened the link themselves): the way back,
    and the mailbox or credential the consent was for when their workspaces include it."""
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return {}
    links = {"fleet_url": reverse("admin:index")}
    cr, mailbox = outcome.consent_request, outcome.mailbox
    if mailbox is not None and Mailbox.objects.restrict(user).filter(pk=mailbox.pk).exists():
        links["mailbox_url"] = reverse("admin:fleet_mailbox_change", args=[mailbox.pk])
    if (
        cr is not None
        and cr.credential_id
        and cr.kind == ConsentRequest.Kind.ADMIN
        and Credential.objects.restrict(user).filter(pk=cr.credential_id).exists()
    ):
        links["credential_url"] = reverse("admin:fleet_credential_change", args=[cr.credential_id])
    return links


def result_page(request: HttpRequest, outcome: consent.ConsentResult, status: int | None = None):
    error = outcome.error
    cr = outcome.consent_request
    context = {
        **fleet_links(request, outcome),
        "graph_credential": bool(
            cr is not None
            and cr.credential_id
            and cr.credential.kind == Credential.Kind.GRAPH_APP_ONLY
        ),
        "outcome": outcome,
        "error": error,
        "code": error.code if error else "",
        "message": error.message if error else "",
        "hint": error.error.hint if error else "",
        "consent_request": outcome.consent_request,
        "mailbox": outcome.mailbox,
    }
    return render(
        request, "fleet/consent_result.html", context, status=status or (200 if outcome.ok else 400)
    )


@never_cache
@require_GET
def consent_start(request: HttpRequest, uid) -> HttpResponse:
    """A consent link: start a fresh Microsoft sign-in for this consent request."""
    consent_request = (
        ConsentRequest.objects.select_related("credential", "mailbox").filter(uid=uid).first()
    )
    if consent_request is None:
        return result_page(request, consent.ConsentResult(error=FleetError(errors.NOT_FOUND)), 404)
    try:
        url = consent.begin(consent_request, prompt=request.GET.get("prompt") or None)
    except FleetError as failure:
        return result_page(request, consent.ConsentResult(consent_request, error=failure))
    return HttpResponseRedirect(url)


@never_cache
@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Where Microsoft sends the browser back after user or admin consent."""
    return result_page(request, consent.complete(request.GET.dict()))
