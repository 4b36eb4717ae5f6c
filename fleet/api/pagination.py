"""Cursor pagination: stable under inserts and deletes, and one indexed range query per page
(no COUNT, no OFFSET scans)."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from fleet.api.envelope import ok


class CursorPage(CursorPagination):
    ordering = "id"  # creation order; ids never change, so a cursor stays valid
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            # A garbled cursor is a bad parameter, not a missing page.
            raise serializers.ValidationError({"cursor": ["Invalid cursor."]}) from None

    def get_paginated_response(self, data):
        return ok(
            data, pagination={"next": self.get_next_link(), "previous": self.get_previous_link()}
        )
