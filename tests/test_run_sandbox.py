"""`manage.py run_sandbox`, as bin/run starts it: the sandbox's own Django app (DEBUG only), its
settings from SANDBOX_* variables, serving discovery over HTTPS with the CA it writes, SMTP with
the app password, and nothing at all when DEBUG is off."""

import os
import re
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent


def _start(tmp_path, **env):
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_sandbox", "--port", "0", "--browser-port", "0"],
        cwd=REPO,
        env={
            **os.environ,
            "DEBUG": "true",
            "SANDBOX_DIR": str(tmp_path),
            "SANDBOX_DNS_PORT": "0",
            "SANDBOX_SMTP_PORT": "0",
            "SANDBOX_IMAP_PORT": "0",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_sandbox_serves_discovery_and_mail_with_its_settings(tmp_path):
    process = _start(tmp_path, SANDBOX_APP_PASSWORD="app-pass-from-env")
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "DNS (" in line:  # the last line of the banner
                break
        banner = "".join(lines)
        assert "Microsoft sandbox running" in banner, banner + process.stderr.read()
        base = re.search(r"MICROSOFT_AUTHORITY_HOST=(\S+)", banner).group(1)
        smtp_port = int(re.search(r"SMTP 127\.0\.0\.1:(\d+)", banner).group(1))
        ca_file = tmp_path / "ca.pem"
        assert f"MICROSOFT_CA_BUNDLE={ca_file}" in banner  # SANDBOX_DIR was read

        config = requests.get(
            f"{base}/common/v2.0/.well-known/openid-configuration", verify=str(ca_file), timeout=5
        )
        assert config.status_code == 200
        assert config.json()["token_endpoint"].startswith(base)

        # The app password from SANDBOX_APP_PASSWORD signs in every directory user; the
        # default one no longer does.
        def login(user, password):
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
                smtp.starttls(context=ssl.create_default_context(cafile=str(ca_file)))
                return smtp.login(user, password)[0]

        assert login("ava@acme-outreach.com", "app-pass-from-env") == 235
        with pytest.raises(smtplib.SMTPAuthenticationError):
            login("ben@acme-outreach.com", "sandbox-app-password")
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert process.returncode == 0  # SIGTERM stops it cleanly


def test_run_sandbox_names_a_bad_setting(tmp_path):
    process = _start(tmp_path, SANDBOX_PORT="84x3")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "SANDBOX_PORT has an invalid value: '84x3' is not a port number" in err
    assert "Traceback" not in err


def test_run_sandbox_does_not_exist_with_debug_off(tmp_path):
    process = _start(tmp_path, DEBUG="false")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Unknown command: 'run_sandbox'" in err
