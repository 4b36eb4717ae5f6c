"""Public pages of the OAuth consent flow: the consent link a mailbox owner opens, and the
callback Microsoft redirects to. The people here are not Fleet users: no login, and every
outcome is a clear page with what to do, never a traceback."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from fleet import consent, errors
from fleet.errors import FleetError
from fleet.models import ConsentRequest


def result_page(request: HttpRequest, outcome: consent.ConsentResult, status: int | None = None):
    error = outcome.error
    context = {
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
