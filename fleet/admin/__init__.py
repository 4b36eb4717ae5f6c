from fleet.admin import (  # noqa: F401
    api_keys,
    auth,
    bulk_add,
    consent,
    credentials,
    imports,
    mailboxes,
    move,
    reconnect,
    tasks,
    webhooks,
    workspaces,
)
