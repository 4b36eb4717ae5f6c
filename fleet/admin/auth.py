"""Django's user and group admins, with the list parameter checks every Fleet list has."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from fleet.admin.base import ValidatedChangeListMixin

for model, stock in ((User, UserAdmin), (Group, GroupAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, type(stock.__name__, (ValidatedChangeListMixin, stock), {}))
