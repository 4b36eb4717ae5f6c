"""Moving app-password mailboxes off Basic auth before Microsoft turns it off (MC786329: disabled
by default for existing tenants at the end of December 2026; then `550 5.7.30`).

- **The plan** (`plan`): a workspace's app-password mailboxes grouped, per domain, by what will
  move them: *app-only* (a Microsoft 365 domain whose tenant has a valid Graph app-only credential
  of the workspace holding the Exchange roles), *consent* (Outlook.com addresses, and Microsoft
  365 domains without such a credential: the owner consents through the workspace's OAuth app),
  *blocked* (why). A domain's tenant comes from its OpenID configuration (`DomainTenant` rows,
  refreshed when a credential is verified and when a move runs).
- **The move** (`start_move` → task `run_move` → `execute_move`): one `MoveItem` per mailbox. The
  app-only group is switched (auth method `graph_app_only`, the credential set, the app password
  wiped, TOTP kept, an event) only after an app-only XOAUTH2 sign-in over SMTP and IMAP passed; a
  failure leaves the mailbox as it was, with the code on its item. The consent group gets one
  consent request each (login_hint: the address); when the owner consents, the XOAUTH2 test runs
  (`finish_consent_move`) and only a passing test wipes the app password.
- **Crash-proof**: progress is on the items, each switch is one transaction with its item, the run
  holds a lease renewed after every chunk, and `reclaim_expired` puts a run whose worker died back
  in the queue; the items already done are not touched again.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.utils import timezone

from fleet import audit, errors
from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.microsoft.http import MicrosoftError
from fleet.models import (
    ConsentRequest,
    Credential,
    DomainTenant,
    Mailbox,
    MailboxEvent,
    MoveItem,
    MoveRun,
    Role,
    Workspace,
)

Group = MoveItem.Group
State = MoveItem.State

MAX_ATTEMPTS = 3  # a run whose worker died this often is failed (MOVE_INTERRUPTED)
TENANT_MAX_AGE = timedelta(days=7)
CHUNK = 20


def lease() -> timedelta:
    """How long a run is held (MOVE_LEASE_SECONDS): renewed after every chunk, which takes
    seconds."""
    return timedelta(seconds=settings.MOVE_LEASE_SECONDS)


# --- domains and their tenants ----------------------------------------------------------------
def refresh_domain_tenants(workspace: Workspace, domains: set[str] | None = None) -> int:
    """Look up (in parallel, one HTTP call each) the tenant of every domain of the workspace's
    app-password mailboxes that is unknown or older than TENANT_MAX_AGE. Returns how many were
    looked up; a domain Microsoft cannot be asked about now is left for next time."""
    if domains is None:
        domains = set(
            Mailbox.objects.filter(workspace=workspace, auth_method=Mailbox.AuthMethod.APP_PASSWORD)
            .values_list("domain", flat=True)
            .distinct()
        )
    fresh = set(
        DomainTenant.objects.filter(
            domain__in=domains, checked_at__gte=timezone.now() - TENANT_MAX_AGE
        ).values_list("domain", flat=True)
    )
    stale = sorted(domains - fresh)
    if not stale:
        return 0

    def look_up(domain: str):
        try:
            return identity.tenant_of_domain(domain)
        except MicrosoftError:
            return None

    with ThreadPoolExecutor(max_workers=min(8, len(stale))) as pool:
        found = [t for t in pool.map(look_up, stale) if t is not None]
    now = timezone.now()
    for t in found:
        DomainTenant.objects.update_or_create(
            domain=t.domain,
            defaults={"tenant_id": t.tenant_id, "consumer": t.consumer, "checked_at": now},
        )
    return len(found)


# --- the plan -----------------------------------------------------------------------------------
@dataclass
class DomainPlan:
    domain: str
    group: str
    reason: str
    count: int
    credential: Credential | None = None


@dataclass
class MovePlan:
    workspace: Workspace
    domains: list[DomainPlan] = field(default_factory=list)

    def count(self, group: str) -> int:
        return sum(d.count for d in self.domains if d.group == group)

    @property
    def total(self) -> int:
        return sum(d.count for d in self.domains)

    @property
    def movable(self) -> int:
        return self.count(Group.APP_ONLY) + self.count(Group.CONSENT)


def affected_q() -> Q:
    """App-password mailboxes still in use: what stops working when Basic auth is turned off."""
    return Q(auth_method=Mailbox.AuthMethod.APP_PASSWORD) & ~Q(status=Mailbox.Status.DISABLED)


def exchange_credentials(workspace: Workspace) -> dict[str, Credential]:
    """The workspace's valid Graph app-only credentials that hold the Exchange roles, by tenant."""
    found = {}
    for c in Credential.objects.filter(
        workspace=workspace, kind=Credential.Kind.GRAPH_APP_ONLY, status=Credential.Status.VALID
    ).order_by("-last_verified_at"):
        if c.has_exchange_roles and c.tenant_guid:
            found.setdefault(c.tenant_guid, c)
    return found


def has_oauth_app(workspace: Workspace) -> bool:
    from fleet.consent import oauth_credential

    try:
        oauth_credential(workspace)
    except FleetError:
        return False
    return True


def plan(workspace: Workspace) -> MovePlan:
    """The move plan: a few queries whatever the number of mailboxes (grouped per domain)."""
    rows = (
        Mailbox.objects.filter(workspace=workspace, auth_method=Mailbox.AuthMethod.APP_PASSWORD)
        .annotate(
            disabled=Case(
                When(status=Mailbox.Status.DISABLED, then=Value(True)), default=Value(False)
            )
        )
        .values_list("domain", "provider", "disabled")
        .annotate(n=Count("id"))
        .order_by("domain")
    )
    rows = list(rows)
    tenants = {t.domain: t for t in DomainTenant.objects.filter(domain__in={r[0] for r in rows})}
    credentials = exchange_credentials(workspace)
    oauth = has_oauth_app(workspace)
    result = MovePlan(workspace)
    for domain, provider, disabled, n in rows:
        group, reason, credential = group_of(
            domain, provider, disabled, tenants.get(domain), credentials, oauth
        )
        result.domains.append(DomainPlan(domain, group, reason, n, credential))
    return result


def group_of(domain, provider, disabled, tenant, credentials, oauth):
    """(group, reason, credential) for the app-password mailboxes of one domain."""
    if disabled:
        return Group.BLOCKED, "disabled: enable the mailbox first", None
    consumer = provider == Mailbox.Provider.OUTLOOK_COM or (tenant is not None and tenant.consumer)
    if not consumer and tenant is not None and tenant.tenant_id in credentials:
        credential = credentials[tenant.tenant_id]
        return Group.APP_ONLY, f"tenant credential {credential.name}", credential
    if not oauth:
        return (
            Group.BLOCKED,
            "no OAuth app for consent: add a credential of kind 'OAuth app'"
            + ("" if consumer else ", or a Graph app-only one holding the Exchange roles"),
            None,
        )
    if consumer:
        return Group.CONSENT, "Outlook.com address: the owner consents", None
    if tenant is None:
        return Group.CONSENT, "tenant not looked up yet (a move looks it up first)", None
    if not tenant.tenant_id:
        return Group.CONSENT, "no Microsoft 365 tenant found for the domain", None
    return Group.CONSENT, "no app-only credential with the Exchange roles for its tenant", None


# --- starting a move ----------------------------------------------------------------------------
def start_move(workspace: Workspace, user=None, mailbox_ids: list[int] | None = None) -> MoveRun:
    """Record a move of the workspace's app-password mailboxes (all, or those of `mailbox_ids`)
    and queue it. An open move of the workspace is returned instead of a second one."""
    if (
        user is not None
        and not Workspace.objects.restrict(user, Role.OPERATOR).filter(pk=workspace.pk).exists()
    ):
        raise FleetError(errors.PERMISSION_DENIED, f"You are not an operator of {workspace}.")
    from fleet.tasks import enqueue_on_commit, run_move

    with transaction.atomic():
        Workspace.objects.select_for_update().filter(pk=workspace.pk).first()  # one at a time
        running = MoveRun.objects.filter(
            workspace=workspace, status__in=[MoveRun.Status.QUEUED, MoveRun.Status.RUNNING]
        ).first()
        if running is not None:
            return running
        mailboxes = Mailbox.objects.filter(
            workspace=workspace, auth_method=Mailbox.AuthMethod.APP_PASSWORD
        )
        if mailbox_ids is not None:
            mailboxes = mailboxes.filter(pk__in=mailbox_ids)
        mailboxes = list(mailboxes.values_list("pk", "email", "domain", "status"))
        if not mailboxes:
            raise FleetError(errors.VALIDATION_ERROR, "No app-password mailboxes to move.")
        run = MoveRun.objects.create(workspace=workspace, created_by=user, total=len(mailboxes))
        groups = {d.domain: d for d in plan(workspace).domains}
        items = []
        for pk, email, domain, status in mailboxes:
            # Only a disabled mailbox is blocked from the start: the run looks the other
            # domains' tenants up first and groups them again (`regroup`).
            disabled = status == Mailbox.Status.DISABLED
            entry = groups.get(domain)
            items.append(
                MoveItem(
                    run=run,
                    mailbox_id=pk,
                    email=email,
                    group=Group.BLOCKED if disabled else (entry.group if entry else Group.CONSENT),
                    state=State.BLOCKED if disabled else State.PENDING,
                    error_code=errors.MOVE_BLOCKED.code if disabled else "",
                    error_detail="disabled: enable the mailbox first" if disabled else "",
                )
            )
        MoveItem.objects.bulk_create(items, batch_size=1000)
        refresh_counts(run)
        audit.record(
            "moverun.started", run, actor=user, changes=audit.set_fields(run, ["total"])
        )
        enqueue_on_commit(run_move, run.pk)
    return run


# --- running it ---------------------------------------------------------------------------------
def claim(run: MoveRun) -> bool:
    now = timezone.now()
    return bool(
        MoveRun.objects.filter(pk=run.pk, status=MoveRun.Status.QUEUED).update(
            status=MoveRun.Status.RUNNING,
            started_at=now,
            lease_until=now + lease(),
            attempts=F("attempts") + 1,
        )
    )


def heartbeat(run: MoveRun) -> None:
    MoveRun.objects.filter(pk=run.pk, status=MoveRun.Status.RUNNING).update(
        lease_until=timezone.now() + lease()
    )


def execute_move(run: MoveRun) -> MoveRun:
    """Run a queued move to its end (the task). An unexpected crash marks the items left
    MOVE_INTERRUPTED (nothing changed on them) and is raised."""
    if not claim(run):
        run.refresh_from_db()
        return run
    run.refresh_from_db()
    try:
        _execute(run)
    except Exception as exc:
        interrupt(run, f"{type(exc).__name__}: {exc}"[:500])
        raise
    run.refresh_from_db()
    return run


def _execute(run: MoveRun) -> None:
    workspace = run.workspace
    pending = MoveItem.objects.filter(run=run, state=State.PENDING)
    # The tenants of the domains still to move (HTTP, in the worker), then their groups again.
    refresh_domain_tenants(
        workspace, set(pending.values_list("mailbox__domain", flat=True).distinct()) - {None}
    )
    regroup(run)
    heartbeat(run)
    move_app_only(run)
    request_consents(run)
    MoveItem.objects.filter(run=run, state=State.PENDING, mailbox__isnull=True).update(
        state=State.FAILED, error_code=errors.NOT_FOUND.code, error_detail="The mailbox was deleted"
    )
    refresh_counts(run)
    MoveRun.objects.filter(pk=run.pk).update(
        status=MoveRun.Status.FINISHED, finished_at=timezone.now(), lease_until=None
    )


def regroup(run: MoveRun) -> None:
    """Pending items by the plan as it is now (a tenant looked up may make consent app-only)."""
    groups = {d.domain: d for d in plan(run.workspace).domains}
    for item in MoveItem.objects.filter(run=run, state=State.PENDING).select_related("mailbox"):
        if item.mailbox is None:
            continue
        entry = groups.get(item.mailbox.domain)
        if entry is None:
            continue
        group = entry.group
        if item.mailbox.status == Mailbox.Status.DISABLED:
            group = Group.BLOCKED
        credential_id = entry.credential.pk if entry.credential else None
        if group != item.group or credential_id != item.credential_id or group == Group.BLOCKED:
            item.group, item.credential_id = group, credential_id
            fields = ["group", "credential", "updated_at"]
            if group == Group.BLOCKED:
                item.state, item.error_code = State.BLOCKED, errors.MOVE_BLOCKED.code
                item.error_detail = entry.reason[:500]
                fields += ["state", "error_code", "error_detail"]
            item.save(update_fields=fields)


def move_app_only(run: MoveRun) -> None:
    """Test each app-only item by app-only XOAUTH2 (MAIL_CHECK_CONCURRENCY at a time) and switch
    the mailboxes that passed, each as its test ends; counts and a heartbeat every CHUNK."""
    from fleet.app_only import probe_with

    items = list(
        MoveItem.objects.filter(run=run, group=Group.APP_ONLY, state=State.PENDING)
        .exclude(mailbox__isnull=True)
        .select_related("mailbox", "credential")
        .order_by("pk")
    )
    workers = max(1, min(settings.MAIL_CHECK_CONCURRENCY, len(items) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="move") as pool:
        # Tests run while earlier results are written: the pool never waits for the database.
        futures = {pool.submit(probe_with, i.mailbox, i.credential): i for i in items}
        for n, future in enumerate(as_completed(futures), start=1):
            item = futures[future]
            error, detail = future.result()
            if error is None:
                switch_to_app_only(item, detail, run.created_by)
            else:
                leave_as_it_was(item, error, detail, run.created_by)
            if n % CHUNK == 0 or n == len(items):
                refresh_counts(run)
                heartbeat(run)


@transaction.atomic
def switch_to_app_only(item: MoveItem, detail: str, actor=None) -> None:
    """After a passing app-only test: the mailbox becomes Graph app-only with the credential,
    its app password is wiped (TOTP kept), and its item says moved — in one transaction."""
    mailbox = Mailbox.objects.select_for_update().get(pk=item.mailbox_id)
    if mailbox.auth_method != Mailbox.AuthMethod.APP_PASSWORD:  # changed meanwhile: keep it
        item.state, item.error_detail = State.MOVED, f"already {mailbox.auth_method}"
        item.save(update_fields=["state", "error_detail", "updated_at"])
        return
    mailbox.auth_method = Mailbox.AuthMethod.GRAPH_APP_ONLY
    mailbox.credential = item.credential
    mailbox.password = ""
    mailbox.last_checked_at = timezone.now()
    mailbox.save(
        update_fields=["auth_method", "credential", "password", "last_checked_at", "updated_at"]
    )
    message = f"Moved off Basic auth: app-only XOAUTH2 passed ({detail[:200]}); app password wiped"
    if mailbox.status != Mailbox.Status.ACTIVE:
        mailbox.set_status(Mailbox.Status.ACTIVE, message=message, actor=actor)
    else:
        mailbox.note(message, actor)
    item.state, item.error_code, item.error_detail = State.MOVED, "", detail[:500]
    item.save(update_fields=["state", "error_code", "error_detail", "updated_at"])


@transaction.atomic
def leave_as_it_was(item: MoveItem, error, detail: str, actor=None) -> None:
    """A failed test: the mailbox keeps its app password and auth method; the item and the
    mailbox's history say why."""
    item.state, item.error_code, item.error_detail = State.FAILED, error.code, detail[:500]
    item.save(update_fields=["state", "error_code", "error_detail", "updated_at"])
    if item.mailbox_id:
        MailboxEvent.objects.create(
            workspace_id=item.mailbox.workspace_id,
            mailbox_id=item.mailbox_id,
            email=item.email,
            kind=MailboxEvent.Kind.NOTE,
            error_code=error.code,
            message=f"Move off Basic auth not done, mailbox left as it was: {detail[:300]}",
            actor=actor,
        )


def request_consents(run: MoveRun) -> None:
    """One consent request per consent item (the address as login_hint), linked to the item."""
    from fleet import consent

    items = (
        MoveItem.objects.filter(run=run, group=Group.CONSENT, state=State.PENDING)
        .exclude(mailbox__isnull=True)
        .select_related("mailbox")
    )
    for n, item in enumerate(items.iterator(), start=1):
        try:
            with transaction.atomic():
                request = consent.initiate(
                    run.workspace,
                    mailbox_uid=item.mailbox.uid,
                    request_data={"move_item": item.pk, "move_run": str(run.uid)},
                    actor=run.created_by,
                )
                item.consent_request = request
                item.state = State.AWAITING_CONSENT
                item.save(update_fields=["consent_request", "state", "updated_at"])
        except FleetError as failure:
            item.state, item.error_code = State.FAILED, failure.code
            item.error_detail = failure.message[:500]
            item.save(update_fields=["state", "error_code", "error_detail", "updated_at"])
        if n % CHUNK == 0:
            refresh_counts(run)
            heartbeat(run)


def refresh_counts(run: MoveRun) -> None:
    """The run's figures from its items: one aggregate and one update."""
    counts = Counter(
        dict(
            MoveItem.objects.filter(run=run).values_list("state").annotate(n=Count("id")).order_by()
        )
    )
    MoveRun.objects.filter(pk=run.pk).update(
        processed=sum(n for state, n in counts.items() if state != State.PENDING),
        moved=counts[State.MOVED],
        consent_sent=counts[State.AWAITING_CONSENT],
        failed=counts[State.FAILED] + counts[State.BLOCKED],
    )


def interrupt(run: MoveRun, message: str) -> None:
    with transaction.atomic():
        MoveItem.objects.filter(run=run, state=State.PENDING).update(
            state=State.FAILED, error_code=errors.MOVE_INTERRUPTED.code, error_detail=message
        )
        refresh_counts(run)
        MoveRun.objects.filter(pk=run.pk).update(
            status=MoveRun.Status.FAILED,
            error_code=errors.MOVE_INTERRUPTED.code,
            error_message=message,
            finished_at=timezone.now(),
            lease_until=None,
        )


def reclaim_expired(now=None) -> int:
    """Runs whose worker stopped renewing the lease (killed, machine restarted) go back to the
    queue and are enqueued again; after MAX_ATTEMPTS they fail with MOVE_INTERRUPTED. Returns
    how many runs were reclaimed or failed."""
    from fleet.tasks import enqueue_on_commit, run_move

    now = now or timezone.now()
    count = 0
    expired = MoveRun.objects.filter(status=MoveRun.Status.RUNNING, lease_until__lt=now)
    for run in expired:
        if run.attempts >= MAX_ATTEMPTS:
            interrupt(run, "The worker running this move stopped several times.")
        else:
            with transaction.atomic():
                taken = MoveRun.objects.filter(
                    pk=run.pk, status=MoveRun.Status.RUNNING, lease_until__lt=now
                ).update(status=MoveRun.Status.QUEUED, lease_until=None)
                if not taken:
                    continue
                enqueue_on_commit(run_move, run.pk)
        count += 1
    return count


# --- the consent group, after the owner consented ----------------------------------------------
def finish_consent_move(item_id: int) -> str:
    """The owner consented (the mailbox now has OAuth tokens): test XOAUTH2 over SMTP and IMAP,
    and only when it passes wipe the app password and mark the item moved."""
    from fleet import mailbox_checks

    item = MoveItem.objects.select_related("mailbox", "run").filter(pk=item_id).first()
    if item is None or item.mailbox is None or item.state == State.MOVED:
        return "gone" if item is None or item.mailbox is None else item.state
    mailbox = item.mailbox
    try:
        token = identity.access_token_for(mailbox)
    except FleetError as failure:
        error, detail = failure.error, failure.message
    else:
        error, detail = mailbox_checks.probe(mailbox, token)
    mailbox_checks.record(mailbox, error, detail, item.run.created_by)
    with transaction.atomic():
        if error is None:
            Mailbox.objects.filter(pk=mailbox.pk).update(password="", updated_at=timezone.now())
            mailbox.refresh_from_db()
            mailbox.note("Moved off Basic auth by the owner's consent; app password wiped")
            item.state, item.error_code, item.error_detail = State.MOVED, "", detail[:500]
        else:
            item.state, item.error_code, item.error_detail = State.FAILED, error.code, detail[:500]
        item.save(update_fields=["state", "error_code", "error_detail", "updated_at"])
        refresh_counts(item.run)
    return item.state


def open_consent_requests(run: MoveRun) -> list[ConsentRequest]:
    return list(
        ConsentRequest.objects.filter(
            pk__in=MoveItem.objects.filter(run=run, consent_request__isnull=False).values(
                "consent_request"
            )
        ).select_related("mailbox")
    )
