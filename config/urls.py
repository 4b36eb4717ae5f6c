from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from fleet import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    # Public consent pages: the link handed to mailbox owners, and the OAuth redirect URI.
    path("connect/<uuid:uid>/", views.consent_start, name="consent_start"),
    path("oauth/callback/", views.oauth_callback, name="oauth_callback"),
]
