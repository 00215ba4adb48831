"""The chain holds, `verify_audit` names the first broken event, PostgreSQL refuses edits itself."""

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from audit.actors import Actor
from audit.models import AuditEvent
from audit.services import audit_record
from tests.factories import UserFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")


def _record_events(count: int) -> list[AuditEvent]:
    # A subject that keeps no versions: raw deletes below would otherwise trip the version links.
    subject = UserFactory()
    with transaction.atomic():
        return [
            audit_record(actor=Actor.system("tests"), action="user.touch", subject=subject, after={"n": n})
            for n in range(count)
        ]


def _raw_sql(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Playing the attacker with owner rights: switch off the guard, as only the owner can.
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            # Deferred foreign-key checks must run before the table can be altered again.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def test_verify_audit__intact_chain__reports_ok_with_the_count(capsys):
    _record_events(3)

    call_command("verify_audit")

    assert "OK: 3 audit events" in capsys.readouterr().out


def test_verify_audit__row_edited_by_raw_sql__names_that_event():
    events = _record_events(4)
    _raw_sql("UPDATE audit_auditevent SET reason = %s WHERE id = %s", ["nothing to see", events[2].pk])

    with pytest.raises(CommandError, match=rf"broken at event #{events[2].pk}: its content"):
        call_command("verify_audit")


def test_verify_audit__row_deleted_by_raw_sql__names_the_event_after_it():
    events = _record_events(4)
    _raw_sql("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])

    with pytest.raises(CommandError, match=rf"broken at event #{events[2].pk}: its prev_hash"):
        call_command("verify_audit")


def test_verify_audit__reports_progress_on_long_chains(capsys):
    _record_events(5)

    call_command("verify_audit", progress_every=2)

    assert capsys.readouterr().err.count("events checked") == 2


@on_postgresql
@pytest.mark.parametrize("sql", ["UPDATE audit_auditevent SET reason = 'forged'", "DELETE FROM audit_auditevent"])
def test_raw_sql_update_or_delete__on_postgresql__is_refused_by_the_database(sql):
    _record_events(1)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)

    assert AuditEvent.objects.get().reason == ""


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers__on_postgresql__keep_the_chain_valid(capsys):
    workspace = WorkspaceFactory()
    writers, events_each = 8, 10
    start = threading.Barrier(writers)
    errors = []

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(events_each):
                with transaction.atomic():
                    audit_record(actor=Actor.worker(f"w{n}"), action="workspace.touch", subject=workspace,
                                 after={"writer": n, "i": i})
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    call_command("verify_audit")
    assert f"OK: {writers * events_each} audit events" in capsys.readouterr().out
