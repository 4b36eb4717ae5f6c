"""The sandbox's directory: tenants (with their domains), users and app registrations, read from a
JSON file (SANDBOX_DIRECTORY, default: directory.json beside this module)."""

from __future__ import annotations

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


@dataclass
class User:
    username: str
    name: str
    tenant: Tenant
    password: str = DEFAULT_PASSWORD
    admin: bool = False

    @property
    def oid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-user:{self.username.lower()}"))


@dataclass
class Application:
    client_id: str
    client_secret: str
    name: str = "App"


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
            )
            for t in data.get("tenants", [])
        ]
        self.users: dict[str, User] = {}
        for u in data.get("users", []):
            self.add_user(u["username"], u.get("name", ""), **_opts(u))
        self.apps: dict[str, Application] = {}
        for a in data.get("applications", []):
            self.add_app(a["client_id"], a["client_secret"], a.get("name", "App"))

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
        return user

    def user(self, username: str) -> User | None:
        return self.users.get((username or "").strip().lower())

    def add_app(self, client_id: str, client_secret: str, name: str = "App") -> Application:
        app = Application(client_id, client_secret, name)
        self.apps[client_id] = app
        return app


def _opts(u: dict) -> dict:
    return {k: u[k] for k in ("password", "admin") if k in u}
