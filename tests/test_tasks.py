import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from fleet.models import MailboxEvent
from fleet.tasks import enqueue_on_commit
from tests import worker_tasks

ROOT = Path(__file__).resolve().parent.parent


def test_enqueue_waits_for_commit(ws_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        enqueue_on_commit(worker_tasks.record_run, ws_a.pk, "after-commit")
        assert DBTaskResult.objects.count() == 0  # nothing is queued before the commit
    assert len(callbacks) == 1
    result = DBTaskResult.objects.get()
    assert result.args_kwargs["args"] == [ws_a.pk, "after-commit"]


@pytest.mark.django_db(transaction=True)
def test_worker_runs_a_task(ws_a):
    worker_tasks.record_run.enqueue(ws_a.pk, "one")
    run_workers(1)
    assert MailboxEvent.objects.filter(message="one").count() == 1
    assert DBTaskResult.objects.get().status == "SUCCESSFUL"


@pytest.mark.django_db(transaction=True)
def test_crashed_task_is_recorded_and_shown_to_superusers(ws_a, personas, client_for):
    worker_tasks.crash.enqueue(ws_a.pk)
    run_workers(1)
    result = DBTaskResult.objects.get()
    assert result.status == "FAILED"
    assert result.exception_class_path == "builtins.RuntimeError"
    assert "crashed on purpose" in result.traceback

    changelist = reverse("admin:django_tasks_database_dbtaskresult_changelist")
    page = client_for(personas["root"]).get(changelist)
    assert page.status_code == 200 and "builtins.RuntimeError" in page.content.decode()
    detail = client_for(personas["root"]).get(
        reverse("admin:django_tasks_database_dbtaskresult_change", args=[result.pk])
    )
    assert "crashed on purpose" in detail.content.decode()
    # Tasks are shared by all workspaces: members do not see them.
    assert client_for(personas["bob"]).get(changelist).status_code == 403


def database_url() -> str:
    """The test database, for worker processes (SQLite tests use a file for this reason)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    port = s.get("PORT") or 5432
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{port}/{s['NAME']}"


def run_workers(count: int) -> None:
    """Run `count` real `db_worker` processes at once until the queue is empty."""
    env = {**os.environ, "DATABASE_URL": database_url()}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--batch",
                "--interval",
                "0",
                "--no-startup-delay",
                "--worker-id",
                f"worker-{n}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(1, count + 1)
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_run_a_task_twice_and_finish_all(ws_a):
    if connection.vendor != "postgresql":
        pytest.skip(
            "SKIP LOCKED claims are shown on PostgreSQL (run with DATABASE_URL=postgres://…)"
        )
    total = 200
    for i in range(total):
        worker_tasks.record_run.enqueue(ws_a.pk, f"task-{i}")
    run_workers(2)

    results = list(DBTaskResult.objects.all())
    assert len(results) == total
    assert all(r.status == "SUCCESSFUL" for r in results)
    assert all(len(r.worker_ids) == 1 for r in results)  # claimed once, by one worker
    per_worker = Counter(r.worker_ids[0] for r in results)
    assert set(per_worker) == {"worker-1", "worker-2"}, per_worker  # both took part
    runs = Counter(MailboxEvent.objects.values_list("message", flat=True))
    assert runs == Counter({f"task-{i}": 1 for i in range(total)})  # each side effect once
