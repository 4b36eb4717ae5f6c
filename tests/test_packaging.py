"""A production install: `pip install .` without extras, in a fresh virtualenv, from a copy of the
source tree. It must contain Fleet but neither the Microsoft sandbox nor its dependencies (the
`demo` extra), and Django's checks must pass without them — including `check --deploy` refusing
a loopback Microsoft endpoint (fleet/checks.py does not need the sandbox to know it).

Slow (a real pip install, ~1 minute with pip's cache warm) but never skipped: it is the only test
that sees what a production host gets."""

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What the fresh interpreter reports about itself.
PROBE = """
import importlib.metadata, importlib.util, json
import fleet, config.settings
files = [str(f) for f in importlib.metadata.distribution("fleet").files]
print(json.dumps({
    "fleet": fleet.__file__,
    "missing": [name for name in ("sandbox", "aiosmtpd", "trustme", "dnslib", "tests")
                if importlib.util.find_spec(name) is None],
    "sandbox_files": [f for f in files if f.startswith("sandbox/")],
    "installed_apps": config.settings.INSTALLED_APPS,
}))
"""


def _run(args, *, cwd, env, timeout=120):
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def production_install(tmp_path_factory):
    """A virtualenv with `pip install <copy of the repo>` (no extras), and an empty directory with
    only manage.py to run it from (so that the source tree's sandbox is not on sys.path)."""
    root = tmp_path_factory.mktemp("production")
    source = root / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".env", "artifacts"
        ),
    )
    venv.create(root / "venv", with_pip=True)
    python = str(root / "venv" / "bin" / "python")
    # Only what pip needs from this environment (its index and cache); nothing of Fleet's.
    env = {
        key: value
        for key, value in os.environ.items()
        if key.startswith("PIP_") or key in {"PATH", "HOME", "LANG", "TMPDIR", "SSL_CERT_FILE"}
    }
    installed = _run(
        [python, "-m", "pip", "install", "--quiet", str(source)], cwd=root, env=env, timeout=900
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    run_dir = root / "run"
    run_dir.mkdir()
    shutil.copy(REPO / "manage.py", run_dir / "manage.py")
    return python, run_dir, env


def test_production_install_has_fleet_without_the_sandbox(production_install):
    python, run_dir, env = production_install
    probe = _run([python, "-c", PROBE], cwd=run_dir, env={**env, "DEBUG": "true"})
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert "site-packages" in report["fleet"]  # the installed copy, not the source tree
    assert report["missing"] == ["sandbox", "aiosmtpd", "trustme", "dnslib", "tests"]
    assert report["sandbox_files"] == []
    # With DEBUG on and no sandbox to find, run_sandbox is not offered.
    assert not any(app.startswith("sandbox") for app in report["installed_apps"])


def test_production_install_passes_django_checks(production_install):
    python, run_dir, env = production_install
    checked = _run(
        # Errors fail it; the wheel has no templates/ or static/ (they live beside manage.py), which
        # staticfiles warns about (W004) and is not this test's subject.
        [python, "manage.py", "check"],
        cwd=run_dir,
        env={**env, "DEBUG": "true"},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ERRORS" not in checked.stderr
    gone = _run([python, "manage.py", "run_sandbox"], cwd=run_dir, env={**env, "DEBUG": "true"})
    assert gone.returncode != 0
    assert "Unknown command: 'run_sandbox'" in gone.stderr


def test_production_install_refuses_loopback_microsoft_on_deploy(production_install):
    python, run_dir, env = production_install
    production = {
        **env,
        "DEBUG": "false",
        "SECRET_KEY": "packaging-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "FIELD_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWZpZWxkLWtleS0wMTIzNDU2Nzg5YWI=",
        "ALLOWED_HOSTS": "fleet.example.com",
    }
    clean = _run([python, "manage.py", "check", "--deploy"], cwd=run_dir, env=production)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    sandboxed = _run(
        [python, "manage.py", "check", "--deploy"],
        cwd=run_dir,
        env={
            **production,
            "MICROSOFT_AUTHORITY_HOST": "https://127.0.0.1:8443",
            "MAIL_SMTP_HOST": "localhost",
        },
    )
    assert sandboxed.returncode != 0
    assert "fleet.E001" in sandboxed.stderr
    assert "MICROSOFT_AUTHORITY_HOST points at https://127.0.0.1:8443" in sandboxed.stderr
    assert "fleet.E002" in sandboxed.stderr
