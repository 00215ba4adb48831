"""`field__in=ids` for long lists of ids, bound as one array on PostgreSQL.

Django binds `field__in=ids` as one placeholder per id, and Django and psycopg each process
every one of them: for the thousands of ids an evaluation cycle reads by (its fired segments),
that costs more than the query itself. On PostgreSQL the ids travel as one array parameter
(`field = ANY(%s)`); elsewhere (SQLite) the filter is Django's `__in`.
"""

from collections.abc import Iterable

from django.db import connection
from django.db.models import F, Lookup, Q


class _AnyOf(Lookup):
    lookup_name = "any_of"
    prepare_rhs = False  # the right-hand side is a list of ids, not one value of the field

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s::bigint[])", [*params, self.rhs]


def id_in(field: str, ids: Iterable[int]) -> Q | Lookup:
    """A filter on `field` (an id or a foreign key) being one of `ids`: `queryset.filter(id_in("pk", ids))`."""
    ids = list(ids)
    if connection.vendor == "postgresql":
        return _AnyOf(F(field), ids)
    return Q(**{f"{field}__in": ids})
