"""Fleet's admin site, outside the fleet.admin package: that package registers models on the
site, so importing it while the site is being set up would register them on a throw-away copy."""

from django.contrib import admin

from fleet import dashboard


class FleetAdminSite(admin.AdminSite):
    """Django's admin with the managers' dashboard on its front page."""

    site_header = "Fleet"
    site_title = "Fleet admin"
    index_title = "Fleet dashboard"
    index_template = "admin/fleet_index.html"
    # The sidebar repeats the dashboard's list of everything and takes 260 px that the mailbox and
    # credential lists need at laptop widths (1280 px); breadcrumbs and the dashboard lead there.
    enable_nav_sidebar = False

    def index(self, request, extra_context=None):
        try:
            workspace_id = int(request.GET.get("workspace", ""))
        except ValueError:
            workspace_id = None
        board = dashboard.build(request.user, workspace_id)
        return super().index(request, {"board": board, **(extra_context or {})})
