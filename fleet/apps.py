from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from fleet import checks, secrets  # noqa: F401  (checks register themselves)

        # Fail at start-up, naming the variable, rather than at the first secret read.
        secrets.fernet()
