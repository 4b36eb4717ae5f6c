"""Django's user and group admins, with the list parameter checks every Fleet list has, and
django-axes' lock-out lists: the platform's, for superusers."""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from fleet.admin.base import ValidatedChangeListMixin


def superusers_only(self, request) -> bool:
    """Users and groups are the platform's (members are managed on their workspace): only
    superusers see them on the index, and nobody else's page load reads Django's permission
    tables for them (two queries on every admin page)."""
    return request.user.is_active and request.user.is_superuser


for model, stock in ((User, UserAdmin), (Group, GroupAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(
        model,
        type(
            stock.__name__,
            (ValidatedChangeListMixin, stock),
            {"has_module_permission": superusers_only},
        ),
    )

for model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(model):
        stock = type(admin.site.get_model_admin(model))
        admin.site.unregister(model)
        admin.site.register(
            model, type(stock.__name__, (stock,), {"has_module_permission": superusers_only})
        )
