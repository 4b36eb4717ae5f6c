from fleet.admin import (  # noqa: F401
    alerts,
    api_keys,
    auth,
    bulk_add,
    consent,
    credentials,
    imports,
    mailboxes,
    move,
    tasks,
    webhooks,
    workspaces,
)
