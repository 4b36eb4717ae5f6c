from fleet.admin import (  # noqa: F401
    api_keys,
    audit,
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
