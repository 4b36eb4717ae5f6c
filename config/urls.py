from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from fleet import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("fleet.api.urls")),
    # Public consent pages: the link handed to mailbox owners, and the OAuth redirect URI.
    path("connect/<uuid:uid>/", views.consent_start, name="consent_start"),
    path("oauth/callback/", views.oauth_callback, name="oauth_callback"),
]

# JSON errors under /api/, Django's pages elsewhere (403: an admin-styled page naming the role).
handler400 = "fleet.api.envelope.bad_request"
handler403 = "fleet.api.envelope.permission_denied"  # an admin-styled page naming the role
handler404 = "fleet.api.envelope.page_not_found"
handler500 = "fleet.api.envelope.server_error"
