"""One guard for hostile request input, before any view sees it.

Text that no layer below can store or parse is refused here, once, rather than in every form,
filter and serializer:

- a NUL byte (PostgreSQL text cannot hold one: psycopg raises ValueError on the query) or an
  unpaired UTF-16 surrogate (not encodable as UTF-8: UnicodeEncodeError) in the path, a query
  string parameter, a form field or a JSON string (keys included);
- JSON nested deeper than REQUEST_MAX_JSON_DEPTH (json.loads and every recursive walk after it
  raise RecursionError long before the body size limit is reached).

Under /api/ the answer is the API's envelope (400; VALIDATION_ERROR naming the field, or
API_MALFORMED_REQUEST for the nesting); elsewhere a plain 400 page that says which field was
refused. Bodies are looked at after ApiRequestMiddleware's size limit, and only the kinds Fleet
reads (form data, JSON); uploaded files are left to their importers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render

from fleet import errors
from fleet.api.envelope import API_PREFIX, error_body, json_error
from fleet.text import unstorable

# A JSON string literal (with its escapes), to blank out before counting brackets.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def json_too_deep(text: str, limit: int) -> bool:
    """Whether arrays/objects in `text` nest deeper than `limit`, counted without parsing (the
    parser itself is what recursion breaks). Brackets inside strings do not count."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _json_strings(value, where: str = "") -> Iterator[tuple[str, str]]:
    """(field path, text) for every key and string in a parsed JSON value (depth is bounded)."""
    if isinstance(value, str):
        yield where or "body", value
    elif isinstance(value, dict):
        for key, inner in value.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, str(key)
            yield from _json_strings(inner, path)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _json_strings(inner, f"{where}[{index}]")


def _fields(data: QueryDict) -> Iterator[tuple[str, str]]:
    for key, values in data.lists():
        yield key, key
        for value in values:
            yield key, value


class Refusal(Exception):
    def __init__(self, error: errors.ErrorCode, message: str, field: str | None = None):
        self.error, self.message, self.field = error, message, field
        super().__init__(message)


def _check(pairs: Iterator[tuple[str, str]], where: str) -> None:
    for field, text in pairs:
        problem = unstorable(text)
        if problem:
            raise Refusal(
                errors.VALIDATION_ERROR,
                f"{field}: {where} contains {problem}, which is not allowed.",
                field,
            )


def inspect(request: HttpRequest) -> None:
    """Raise Refusal for the first hostile part of the request."""
    problem = unstorable(request.path)
    if problem:
        raise Refusal(errors.VALIDATION_ERROR, f"The address contains {problem}.")
    _check(_fields(request.GET), "the query parameter")
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    content_type = request.content_type or ""
    try:
        if content_type in _FORM_TYPES:
            if request.method == "POST":
                form = request.POST
            elif content_type == _FORM_TYPES[0]:
                form = QueryDict(request.body, encoding=request.encoding)
            else:
                return
            _check(_fields(form), "the form field")
        elif content_type == "application/json" or content_type.endswith("+json"):
            _inspect_json(request.body, request.encoding or "utf-8")
    except (RequestDataTooBig, SuspiciousOperation, MultiPartParserError) as exc:
        if isinstance(exc, RequestDataTooBig):
            raise Refusal(
                errors.API_REQUEST_TOO_LARGE, errors.API_REQUEST_TOO_LARGE.message
            ) from exc
        raise Refusal(errors.API_MALFORMED_REQUEST, "The request body could not be read.") from exc


def _inspect_json(body: bytes, encoding: str) -> None:
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return  # the parser answers 400 for an undecodable body
    limit = settings.REQUEST_MAX_JSON_DEPTH
    if json_too_deep(text, limit):
        raise Refusal(
            errors.API_MALFORMED_REQUEST,
            f"The JSON body nests arrays and objects deeper than {limit} levels.",
        )
    try:
        data = json.loads(text)
    except ValueError:
        return  # malformed JSON: the view's parser says so
    _check(_json_strings(data), "the JSON string")


STATUS = {errors.API_REQUEST_TOO_LARGE.code: 413}


class HostileInputMiddleware:
    """Refuse NUL bytes, unpaired surrogates and deep JSON before any view (see module doc)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            inspect(request)
        except Refusal as refusal:
            return self.refuse(request, refusal)
        return self.get_response(request)

    @staticmethod
    def refuse(request: HttpRequest, refusal: Refusal) -> HttpResponse:
        status = STATUS.get(refusal.error.code, 400)
        if request.path.startswith(API_PREFIX):
            if refusal.field:
                fields = {refusal.field: [refusal.message]}
                body = error_body(refusal.error, refusal.message, fields=fields)
                return JsonResponse(body, status=status)
            return json_error(refusal.error, status, refusal.message)
        context = {"message": refusal.message, "code": refusal.error.code}
        return render(request, "fleet/bad_request.html", context, status=status)
