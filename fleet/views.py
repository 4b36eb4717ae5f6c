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


# --- 403 outside the API -----------------------------------------------------------------------
NO_ROLE_MESSAGE = (
    "Your role does not allow this. Roles go viewer → operator → manager → owner; a workspace "
    "owner can raise yours."
)


def permission_denied(request: HttpRequest, exception, template_name: str = "403.html"):
    """handler403: the API's envelope under /api/, else a page in the admin's style that says
    which role is needed (PermissionDenied's message, see fleet.admin.base.require_role) and
    leads back."""
    from django.contrib import admin
    from django.utils.http import url_has_allowed_host_and_scheme

    from fleet.api.envelope import _is_api
    from fleet.api.envelope import permission_denied as api_permission_denied

    if _is_api(request):
        return api_permission_denied(request, exception, template_name)
    back = request.META.get("HTTP_REFERER", "")
    if not back or back == request.build_absolute_uri() or not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = ""
    context = {
        **admin.site.each_context(request),
        "title": "You may not do this",
        "reason": str(exception or "") or NO_ROLE_MESSAGE,
        "back_url": back,
    }
    return render(request, template_name, context, status=403)
