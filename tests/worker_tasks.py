"""Tasks used only by the worker tests: they exercise the queue itself, not a Fleet service."""

import time

from django_tasks import task

from fleet.models import MailboxEvent


@task()
def record_run(workspace_id: int, marker: str) -> str:
    # A visible side effect per run, so that a task run twice would show up twice.
    MailboxEvent.objects.create(
        workspace_id=workspace_id, email="worker@test", kind="note", message=marker
    )
    time.sleep(0.005)
    return marker


@task()
def crash(workspace_id: int) -> None:
    raise RuntimeError(f"task for workspace {workspace_id} crashed on purpose")


@task()
def barrier(workers: int, timeout: float = 60.0) -> int:
    """Returns once `workers` barrier tasks run at the same time (one per worker: a worker runs
    one task at a time), so that a test knows that many workers are up."""
    from django_tasks_db.models import DBTaskResult

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = DBTaskResult.objects.filter(
            task_path=barrier.module_path, status__in=["RUNNING", "SUCCESSFUL"]
        ).count()
        if seen >= workers:
            return seen
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {workers} workers came up")
