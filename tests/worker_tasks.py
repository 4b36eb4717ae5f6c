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
