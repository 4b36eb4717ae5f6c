"""Alert e-mails: the key's user reads and changes their own opt-out in a workspace (the digests
of fleet/alerts.py go to managers and owners who did not opt out)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema

from fleet import alerts, errors
from fleet.api.envelope import ApiError
from fleet.api.schema import envelope
from fleet.api.serializers import AlertSettingsSerializer, AlertSettingsWriteSerializer
from fleet.api.workspaces import WorkspaceView
from fleet.models import Membership, Role

TAG = ["Workspaces"]


class WorkspaceAlerts(WorkspaceView):
    # Reading one's own setting needs any role there; changing it a key that may manage (a
    # read-only key stays read-only), as digests go to managers and owners.
    roles = {"GET": Role.VIEWER, "PUT": Role.MANAGER}
    serializer_class = AlertSettingsSerializer

    def membership(self) -> Membership:
        workspace = self.get_object()
        membership = (
            Membership.objects.select_related("user")
            .filter(workspace=workspace, user=self.request.user)
            .first()
        )
        if membership is None:  # a superuser reaches every workspace without a membership
            raise ApiError(
                errors.NOT_FOUND, 404, "You are not a member of this workspace: no alert e-mails."
            )
        return membership

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_alerts_get",
        summary="Get my alert e-mails",
        description="Whether the key's user gets this workspace's disconnect digests.",
        responses={200: envelope("AlertSettingsEnvelope", AlertSettingsSerializer())},
    )
    def get(self, request, pk: int):
        return self.respond(self.membership())

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_alerts_update",
        summary="Turn my alert e-mails on or off",
        description="The key's user's own digests of disconnects and recoveries in this "
        "workspace (keys that may manage there).",
        request=AlertSettingsWriteSerializer,
        responses={200: envelope("AlertSettingsEnvelope", AlertSettingsSerializer())},
    )
    def put(self, request, pk: int):
        membership = self.membership()
        data = self.validated(AlertSettingsWriteSerializer)
        alerts.set_alert_emails(membership, data["alert_emails"], request.user)
        return self.respond(membership)
