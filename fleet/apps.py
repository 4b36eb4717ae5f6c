import gc

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class FleetConfig(AppConfig):
    name = "fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from fleet import (  # noqa: F401  (checks register themselves)
            checks,
            secrets,
            webhooks,
        )

        # Fail at start-up, naming the variable, rather than at the first secret read.
        secrets.fernet()
        # What start-up loaded (Django, the apps, their modules) lives as long as the process:
        # moved out of the collector's reach, a full collection scans only what came after it.
        # A full collection of a loaded process took ~100 ms, holding the GIL: every request
        # and every in-flight Graph batch of a bulk add stopped for it (issue 15).
        # https://docs.python.org/3/library/gc.html#gc.freeze
        gc.freeze()


class FleetAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, with Fleet's site (the dashboard) as the default site."""

    default = False  # FleetConfig stays the app config of `fleet`
    default_site = "fleet.admin_site.FleetAdminSite"
