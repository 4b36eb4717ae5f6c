"""Fleet's JSON API under /api/v1/: see the README's "API" section."""
