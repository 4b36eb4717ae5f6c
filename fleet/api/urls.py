from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from fleet.api import (
    alerts,
    audit,
    bulk,
    connect,
    credentials,
    imports,
    mailboxes,
    move,
    reconnect,
    workspaces,
)
from fleet.api.envelope import page_not_found

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("schema.json", SpectacularJSONAPIView.as_view(), name="api-schema-json"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("workspaces", workspaces.WorkspaceList.as_view()),
    path("workspaces/<int:pk>", workspaces.WorkspaceDetail.as_view()),
    path("workspaces/<int:pk>/webhook", workspaces.WorkspaceWebhook.as_view()),
    path("workspaces/<int:pk>/alerts", alerts.WorkspaceAlerts.as_view()),
    path("mailboxes", mailboxes.MailboxList.as_view()),
    path("mailboxes/sweep", mailboxes.MailboxSweep.as_view()),
    path("mailboxes/move-plan", move.MovePlanView.as_view()),
    path("mailboxes/move-to-oauth", move.MoveToOAuth.as_view()),
    path("mailboxes/move-to-oauth/<uuid:run_uid>", move.MoveRunDetail.as_view()),
    path("mailboxes/reconnect", reconnect.MailboxReconnect.as_view()),
    path("mailboxes/reconnect/<uuid:run_uid>", reconnect.ReconnectRunDetail.as_view()),
    path("mailboxes/<uuid:uid>", mailboxes.MailboxDetail.as_view()),
    path("mailboxes/<uuid:uid>/health", reconnect.MailboxHealth.as_view()),
    path("mailboxes/<uuid:uid>/warmup/start", mailboxes.WarmupStart.as_view()),
    path("mailboxes/<uuid:uid>/warmup/pause", mailboxes.WarmupPause.as_view()),
    path("mailboxes/<uuid:uid>/warmup/resume", mailboxes.WarmupResume.as_view()),
    path("mailboxes/<uuid:uid>/test", mailboxes.MailboxConnectionTest.as_view()),
    path("mailboxes/<uuid:uid>/approve", mailboxes.MailboxApprove.as_view()),
    path("mailboxes/<uuid:uid>/disable", mailboxes.MailboxDisable.as_view()),
    path("mailboxes/<uuid:uid>/enable", mailboxes.MailboxEnable.as_view()),
    path("mailboxes/<uuid:uid>/totp", mailboxes.MailboxTotp.as_view()),
    path("mailboxes/connect/outlook", connect.ConnectOutlook.as_view()),
    path("mailboxes/import/outlook", imports.ImportOutlook.as_view()),
    path("mailboxes/microsoft", connect.ConnectMicrosoft.as_view()),
    path("mailboxes/microsoft/bulk", bulk.BulkAddMicrosoft.as_view()),
    path("mailboxes/microsoft/bulk/<uuid:run_uid>", bulk.BulkAddRunDetail.as_view()),
    path("mailboxes/consent-request/initiate", connect.ConsentRequestInitiate.as_view()),
    path("mailboxes/consent-request", connect.ConsentRequestList.as_view()),
    path("mailboxes/consent-request/<uuid:uid>", connect.ConsentRequestDetail.as_view()),
    path("audit-log", audit.AuditLogList.as_view()),
    path("credentials", credentials.CredentialList.as_view()),
    path("credentials/<int:pk>", credentials.CredentialDetail.as_view()),
    path("credentials/<int:pk>/verify", credentials.CredentialVerify.as_view()),
    # Anything else under /api/ answers the JSON 404, even with DEBUG on.
    re_path(r"^.*$", csrf_exempt(lambda request, *a, **k: page_not_found(request, None))),
]
