from fleet.admin import (  # noqa: F401
    bulk_add,
    consent,
    credentials,
    imports,
    mailboxes,
    tasks,
    webhooks,
    workspaces,
)
