"""The sandbox's directory: tenants (with their domains), users and app registrations, read from a
JSON file (SANDBOX_DIRECTORY, default: directory.json beside this module), and the DNS records of
the demo domains (SPF/DKIM) that `run_sandbox` serves.

A user may have aliases (secondary proxyAddresses), no Exchange Online mailbox (`"mailbox":
false`, as an unlicensed user) or be outside every app's application access policy
(`"app_access_denied": true`) or outside the apps' Exchange grant (`"exchange_excluded": true`),
and may sign in with a name (`"upn"`, the userPrincipalName) other than its mail address, as
Microsoft 365 users often do (`vng@contoso.onmicrosoft.com` for `victor.ng@contoso.com`): Graph's
`/users/{key}` then finds them by that name, not by their mail address.
An app may list `expired_secrets` (AADSTS7000222) and its application permissions (`roles`); a
tenant names the apps Exchange lets at its mailboxes (`exchange_apps`) and may have Basic auth
turned off (`basic_auth_off`)."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("directory.json")
DEFAULT_PASSWORD = "sandbox"


@dataclass
class Tenant:
    id: str
    name: str
    domains: list[str]
    user_consent_allowed: bool = True
    consumer: bool = False
    # Apps whose tenant-wide (admin) consent was granted: client ids.
    consented_apps: set[str] = field(default_factory=set)
    # Apps whose service principal Exchange lets at every mailbox of the tenant (RBAC for
    # Applications with an org-wide scope, or Add-MailboxPermission on each): client ids.
    exchange_apps: set[str] = field(default_factory=set)
    # Exchange refuses app passwords here (Basic auth turned off): 550 5.7.30 on SMTP AUTH.
    basic_auth_off: bool = False


@dataclass
class User:
    username: str
    name: str
    tenant: Tenant
    password: str = DEFAULT_PASSWORD
    admin: bool = False
    aliases: list[str] = field(default_factory=list)
    mailbox: bool = True  # False: no Exchange Online licence (MailboxNotEnabledForRESTAPI)
    app_access_denied: bool = False  # an application access policy leaves this mailbox out
    exchange_excluded: bool = False  # outside the apps' Exchange grant (management scope)
    upn: str = ""  # the sign-in name when it is not the mail address (`username`)

    @property
    def user_principal_name(self) -> str:
        return self.upn or self.username

    @property
    def oid(self) -> str:
        return _oid(self.username.lower())

    @property
    def proxy_addresses(self) -> list[str]:
        """Exchange's form: the primary address as `SMTP:`, aliases as `smtp:`."""
        return [f"SMTP:{self.username}", *(f"smtp:{a}" for a in self.aliases)]


@functools.lru_cache(maxsize=100_000)
def _oid(username: str) -> str:
    """A user's object id: stable, derived from the sign-in address."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-user:{username}"))


@dataclass
class Application:
    client_id: str
    client_secret: str
    name: str = "App"
    expired_secrets: list[str] = field(default_factory=list)
    # Application permissions with admin consent: Graph's and Exchange Online's
    # (IMAP.AccessAsApp, SMTP.SendAsApp). Apps added by tests hold the bulk add's two.
    roles: list[str] = field(default_factory=lambda: list(GRAPH_ROLES))


GRAPH_ROLES = ("User.Read.All", "MailboxSettings.Read")
EXCHANGE_ROLES = ("IMAP.AccessAsApp", "SMTP.SendAsApp")


class Directory:
    def __init__(self, data: dict):
        self.tenants: list[Tenant] = [
            Tenant(
                id=t["id"],
                name=t["name"],
                domains=[d.lower() for d in t["domains"]],
                user_consent_allowed=t.get("user_consent_allowed", True),
                consumer=t.get("consumer", False),
                consented_apps=set(t.get("consented_apps", [])),
                exchange_apps=set(t.get("exchange_apps", [])),
                basic_auth_off=t.get("basic_auth_off", False),
            )
            for t in data.get("tenants", [])
        ]
        self.users: dict[str, User] = {}
        self.by_upn: dict[str, User] = {}  # sign-in names other than the mail address → user
        # Object id → user: `/users/{id}` without computing every user's id (a uuid5) each time.
        self.by_oid: dict[str, User] = {}
        for u in data.get("users", []):
            self.add_user(u["username"], u.get("name", ""), **_opts(u))
        self.apps: dict[str, Application] = {}
        for a in data.get("applications", []):
            app = self.add_app(a["client_id"], a["client_secret"], a.get("name", "App"))
            app.expired_secrets = list(a.get("expired_secrets", []))
            if "roles" in a:
                app.roles = list(a["roles"])
        # domain → {"spf", "dkim", "dmarc", "mx"}: what the sandbox DNS publishes for it.
        self.dns: dict[str, dict] = {d.lower(): v for d, v in data.get("dns", {}).items()}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Directory:
        return cls(json.loads(Path(path or DEFAULT_FILE).read_text()))

    def tenant_for_domain(self, domain: str) -> Tenant | None:
        return next((t for t in self.tenants if domain.lower() in t.domains), None)

    def tenant(self, name: str) -> Tenant | None:
        """A tenant by GUID or by one of its domains."""
        name = name.lower()
        return next((t for t in self.tenants if t.id == name or name in t.domains), None)

    def add_tenant(self, id: str, name: str, domains: list[str], **opts) -> Tenant:
        tenant = Tenant(id=id, name=name, domains=[d.lower() for d in domains], **opts)
        self.tenants.append(tenant)
        return tenant

    def add_user(self, username: str, name: str = "", **opts) -> User:
        domain = username.rsplit("@", 1)[-1]
        tenant = self.tenant_for_domain(domain)
        if tenant is None:
            raise ValueError(f"no sandbox tenant has the domain {domain}")
        user = User(username=username, name=name or username, tenant=tenant, **opts)
        self.users[username.lower()] = user
        self.by_oid[user.oid] = user
        if user.upn:
            self.by_upn[user.upn.lower()] = user
        return user

    def user(self, username: str) -> User | None:
        return self.users.get((username or "").strip().lower())

    def user_by_id_or_upn(self, key: str, tenant: Tenant) -> User | None:
        """Graph's `/users/{id | userPrincipalName}`, within one tenant: by sign-in name, not by
        mail address (a user whose UPN differs is not found by their mail)."""
        key = key.strip().lower()
        user = self.users.get(key)
        if user is not None and user.user_principal_name.lower() != key:
            user = None  # the mail address of a user who signs in with another name
        if user is None:
            user = self.by_upn.get(key)
            if user is not None and self.users.get(user.username.lower()) is not user:
                user = None  # removed from the directory since
        if user is None:
            user = self.by_oid.get(key)
            if user is not None and self.users.get(user.username.lower()) is not user:
                user = None  # removed from the directory since
        user = user or next((u for u in self.users.values() if u.oid == key), None)
        return user if user is not None and user.tenant is tenant else None

    def users_with_proxy_address(self, address: str, tenant: Tenant) -> list[User]:
        """Users whose proxyAddresses hold `address` (`smtp:x`; case-insensitive, as Graph)."""
        address = address.lower()
        return [
            u
            for u in self.users.values()
            if u.tenant is tenant and address in (p.lower() for p in u.proxy_addresses)
        ]

    def add_app(self, client_id: str, client_secret: str, name: str = "App") -> Application:
        app = Application(client_id, client_secret, name)
        self.apps[client_id] = app
        return app


def _opts(u: dict) -> dict:
    keys = (
        "password",
        "admin",
        "aliases",
        "mailbox",
        "app_access_denied",
        "exchange_excluded",
        "upn",
    )
    return {k: u[k] for k in keys if k in u}
