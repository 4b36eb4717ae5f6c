from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """Only adds `manage.py run_sandbox`; config/settings.py installs it when DEBUG is on and the
    sandbox's source is present (never in a production install, whose wheel leaves it out)."""

    name = "sandbox"
    verbose_name = "Microsoft sandbox (demo and tests)"
