from fleet.admin import (  # noqa: F401
    api_keys,
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
