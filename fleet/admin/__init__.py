from django.contrib import admin

from fleet.admin import (  # noqa: F401
    api_keys,
    consent,
    credentials,
    mailboxes,
    tasks,
    webhooks,
    workspaces,
)

admin.site.site_header = "Fleet"
admin.site.site_title = "Fleet admin"
admin.site.index_title = "Mailbox fleet"
