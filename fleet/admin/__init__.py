from fleet.admin import (  # noqa: F401
    bulk_add,
    consent,
    credentials,
    mailboxes,
    tasks,
    webhooks,
    workspaces,
)
