"""The Microsoft sandbox: Microsoft's identity platform and Graph, as Fleet uses them, served over
real HTTPS on loopback for tests and the demo. Product code (the demo runs on it); production
settings refuse to point at it (see fleet/checks.py).

- server.py     the HTTPS server (certificates from trustme), the browser-facing http listener,
                the route table and the failure switches
- directory.py  tenants, users and app registrations, from a JSON file
- identity.py   OpenID configuration, authorize page, token endpoint, admin consent
- graph.py      Graph routes (`/me`)
- dns.py        the DNS server on loopback (SPF/DKIM checks)
"""
