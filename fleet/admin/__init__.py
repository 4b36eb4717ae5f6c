from django.contrib import admin

from fleet.admin import consent, credentials, mailboxes, tasks, workspaces  # noqa: F401

admin.site.site_header = "Fleet"
admin.site.site_title = "Fleet admin"
admin.site.index_title = "Mailbox fleet"
