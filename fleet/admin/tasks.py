"""Background task results (crashed ones with their traceback) for superusers: tasks are shared
by all workspaces, so members do not see them."""

from django.contrib import admin
from django_tasks_db.admin import DBTaskResultAdmin
from django_tasks_db.models import DBTaskResult

from fleet.admin.base import ValidatedChangeListMixin

admin.site.unregister(DBTaskResult)


@admin.register(DBTaskResult)
class TaskResultAdmin(ValidatedChangeListMixin, DBTaskResultAdmin):
    list_display = [*DBTaskResultAdmin.list_display, "exception_class_path"]
    search_fields = ["task_path", "exception_class_path"]

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser
