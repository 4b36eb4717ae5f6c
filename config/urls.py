from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("fleet.api.urls")),
]

# JSON errors under /api/, Django's pages elsewhere.
handler400 = "fleet.api.envelope.bad_request"
handler403 = "fleet.api.envelope.permission_denied"
handler404 = "fleet.api.envelope.page_not_found"
handler500 = "fleet.api.envelope.server_error"
