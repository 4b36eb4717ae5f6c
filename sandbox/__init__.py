"""The Microsoft sandbox: Microsoft's identity platform and Graph, as Fleet uses them, served over
real HTTPS on loopback for tests and the demo. Not part of Fleet: `fleet` never imports it, the
wheel leaves it out, and its dependencies (aiosmtpd, trustme, dnslib) are the `demo` extra.
Production settings refuse to point at it (see fleet/checks.py).

- server.py       the HTTPS server (certificates from trustme), the browser-facing http listener,
                  the route table and the failure switches
- directory.py    tenants, users and app registrations, from a JSON file
- identity.py     OpenID configuration, authorize page, token endpoint, admin consent
- graph.py        Graph routes (`/me`, users, mailbox settings)
- mailservers.py  SMTP and IMAP servers (XOAUTH2 with its tokens, or an app password)
- dns.py          the DNS server on loopback (SPF/DKIM checks)
- settings.py     its SANDBOX_* environment variables
- apps.py, management/commands/run_sandbox.py   `manage.py run_sandbox` (DEBUG only; bin/run)
"""
