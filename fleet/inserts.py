"""`insert_many`: Django's `bulk_create` for the hot bulk inserts (a 500-row import, a bulk add's
chunk, their audit entries and events), by PostgreSQL's COPY on PostgreSQL.

Why (issue 15, profiles of the import and of the bulk add's chunk writes): on PostgreSQL Django
inserts many rows as `INSERT … SELECT * FROM UNNEST(%s::text[], …)`, and psycopg writes each
array in Python, escaping every quote with a regular expression: the JSON of 500 audit entries
alone meant 33,000 substitutions, and the INSERT of 500 audit entries took 55 to 60 ms. COPY sends
the same rows in psycopg's C row format: 20 ms for those entries, 48 ms instead of 80 ms for 500
mailboxes. COPY returns no ids, so the ids are taken from the table's sequence first (one
`nextval` query for all); each object ends as `bulk_create` leaves it (pk set, saved state).
https://www.postgresql.org/docs/current/sql-copy.html

Elsewhere (SQLite), and for what COPY cannot carry (expressions as values), it is `bulk_create`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections, models, router
from django.utils import timezone

M = TypeVar("M", bound=models.Model)


def insert_many(objects: Iterable[M]) -> list[M]:
    """Insert new model instances as `Model.objects.bulk_create(objects)` would (same rows, pks
    set on the objects, which are then saved instances); database errors are Django's
    (`IntegrityError` …). Generated columns are not read back: they load when first read."""
    objects = list(objects)
    if not objects:
        return objects
    model = type(objects[0])
    using = router.db_for_write(model)
    connection = connections[using]
    fields = [f for f in model._meta.concrete_fields if not f.generated]
    if connection.vendor != "postgresql" or len(objects) < 2 or not _serial_pk(model):
        return model._default_manager.bulk_create(objects)
    for obj in objects:
        obj._prepare_related_fields_for_save(operation_name="insert_many")
    rows = []
    columns = [(f, _as_it_is(f)) for f in fields[1:]]
    for obj in objects:
        row = []
        for f, as_it_is in columns:
            value = f.pre_save(obj, True)
            if as_it_is(value):
                row.append(value)  # what get_db_prep_save would give back, at a tenth the cost
            elif hasattr(value, "as_sql"):  # an expression: only SQL can say
                return model._default_manager.bulk_create(objects)
            else:
                row.append(f.get_db_prep_save(value, connection))
        rows.append(row)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [connection.ops.quote_name(model._meta.db_table), model._meta.pk.column, len(rows)],
        )
        ids = [pk for (pk,) in cursor.fetchall()]
    _copy(connection, model, fields, ([pk, *row] for pk, row in zip(ids, rows, strict=True)))
    for obj, pk in zip(objects, ids, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = using
    return objects


def insert_rows(model: type[models.Model], names: list[str], rows: Iterable[tuple]) -> int:
    """Insert rows given as tuples of the fields `names` (attnames: `run_id`), every other field
    at its default; for many rows whose ids nobody reads back (a bulk add's 500 pending
    results): no model instance each, and the database numbers them. Returns how many."""
    rows = list(rows)
    if not rows:
        return 0
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql":
        made = (model(**dict(zip(names, r, strict=True))) for r in rows)
        return len(model._default_manager.bulk_create(made))
    by_name = {f.attname: f for f in model._meta.concrete_fields}
    given = [by_name[name] for name in names]
    now = timezone.now()
    rest, per_row = [], []  # defaults: the same for every row, or made for each (a uuid)
    for f in model._meta.concrete_fields:
        if f in given or f.primary_key or f.generated:
            continue
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            rest.append((f, now))
        elif f.has_default() and callable(f.default):
            per_row.append(f)
        else:
            rest.append((f, f.get_default()))
    fixed = [f.get_db_prep_save(v, connection) for f, v in rest]
    checks = [(f, _as_it_is(f)) for f in given]

    def prepared(row: tuple) -> list:
        values = [
            v if as_it_is(v) else f.get_db_prep_save(v, connection)
            for (f, as_it_is), v in zip(checks, row, strict=True)
        ]
        made = [f.get_db_prep_save(f.get_default(), connection) for f in per_row]
        return [*values, *fixed, *made]

    _copy(connection, model, [*given, *(f for f, _ in rest), *per_row], map(prepared, rows))
    return len(rows)


def _copy(connection, model: type[models.Model], fields: list[models.Field], rows) -> None:
    """One COPY of `rows` (lists of database values, in the order of `fields`) into the model's
    table; a failure is Django's error, and the statement is logged like any other (so that
    assertNumQueries and the benchmarks' counts see it)."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    sql = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
    started, count = time.monotonic(), 0
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.cursor.copy(sql) as copy,
    ):
        for row in rows:
            copy.write_row(row)
            count += 1
    if connection.queries_logged:
        connection.queries_log.append(
            {"sql": f"{sql} -- {count} rows", "time": f"{time.monotonic() - started:.3f}"}
        )


# Fields whose database value is the Python value itself when it has this exact type (Django's
# preparation of them only converts other types): a mailbox row has 42 columns, and preparing
# every value was a third of a bulk add's chunk write.
_PLAIN = {
    models.CharField: str,
    models.EmailField: str,
    models.SlugField: str,
    models.TextField: str,
    models.BooleanField: bool,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
}


def _as_it_is(field: models.Field) -> Callable[[Any], bool]:
    """Whether a value of `field` goes to the database as it is (else Django prepares it)."""
    null = field.null
    if type(field) is models.DateTimeField:
        # An aware datetime as it is; a naive one is made aware, with Django's warning.
        return lambda v: (
            (v is None and null)
            or (type(v) is datetime.datetime and (v.tzinfo is not None or not settings.USE_TZ))
        )
    if isinstance(field, models.ForeignKey) and isinstance(field.target_field, models.AutoField):
        kind: type | None = int
    else:  # exact classes: a subclass (an encrypted text field) prepares its own way
        kind = _PLAIN.get(type(field))
    if kind is None:
        return lambda v: False
    return lambda v: type(v) is kind or (v is None and null)


def _serial_pk(model: type[models.Model]) -> bool:
    """An id the database numbers (AutoField and its kin), which COPY must be given."""
    pk = model._meta.pk
    return isinstance(pk, models.AutoField) and model._meta.concrete_fields[0] is pk
