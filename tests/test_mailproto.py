"""The SMTP/IMAP sign-in checks against real servers on loopback, with real TLS: every Microsoft
failure the issue names maps to its catalogue code."""

import pytest

from fleet import errors
from fleet.mailproto import Login, MailCheckError, Server, check_imap, check_smtp, smtp_error
from sandbox import mailservers as ms
from tests.mail_fixtures import mail, servers  # noqa: F401


def smtp_of(s):
    return Server(s.host, s.smtp_port, "starttls")


def imap_of(s):
    return Server(s.host, s.imap_port, "ssl")


def failure(check, server, login, **kw):
    with pytest.raises(MailCheckError) as info:
        check(server, login, **kw)
    return info.value


def test_app_password_signs_in_over_starttls_and_ssl(mail):
    mail.add("ann@contoso.com", "app-pass-1")
    login = Login("ann@contoso.com", "app-pass-1")
    assert check_smtp(smtp_of(mail), login).startswith("235 ")
    assert check_imap(imap_of(mail), login).startswith("OK")


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (ms.SMTP_AUTH_DISABLED, "SMTP_AUTH_DISABLED"),
        (ms.SMTP_SECURITY_DEFAULTS, "SMTP_AUTH_DISABLED"),
        (ms.SMTP_BASIC_AUTH_UNSUPPORTED, "BASIC_AUTH_DISABLED"),
        (ms.SMTP_BAD_CREDENTIALS, "INVALID_CREDENTIALS"),
    ],
)
def test_smtp_auth_replies_map_to_catalogue_codes(mail, reply, code):
    mail.add("bob@contoso.com", "right", smtp_reply=reply)
    error = failure(check_smtp, smtp_of(mail), Login("bob@contoso.com", "right"))
    assert error.error.code == code
    assert reply.split()[1] in error.detail  # the enhanced code is kept for the person
    assert errors.get(code).hint


def test_wrong_password_is_invalid_credentials_on_both(mail):
    mail.add("cat@contoso.com", "right")
    login = Login("cat@contoso.com", "wrong")
    assert failure(check_smtp, smtp_of(mail), login).error == errors.INVALID_CREDENTIALS
    assert failure(check_imap, imap_of(mail), login).error == errors.INVALID_CREDENTIALS


@pytest.mark.parametrize("reply", [ms.IMAP_AUTHENTICATE_FAILED, ms.IMAP_LOGIN_FAILED])
def test_imap_no_replies_are_invalid_credentials(mail, reply):
    mail.add("dan@contoso.com", "right", imap_reply=reply)
    error = failure(check_imap, imap_of(mail), Login("dan@contoso.com", "right"))
    assert error.error == errors.INVALID_CREDENTIALS
    assert reply.removeprefix("NO ") in error.detail


def test_connection_refused(mail):
    port = ms.refused_port()
    login = Login("x@contoso.com", "pw")
    assert (
        failure(check_smtp, Server("127.0.0.1", port, "starttls"), login).error
        == errors.CONNECTION_REFUSED
    )
    assert (
        failure(check_imap, Server("127.0.0.1", port, "ssl"), login).error
        == errors.CONNECTION_REFUSED
    )


def test_a_server_that_stops_answering_times_out(mail):
    mail.add("eve@contoso.com", "pw", stall=5)
    login = Login("eve@contoso.com", "pw")
    smtp = failure(check_smtp, smtp_of(mail), login, timeout=0.5)
    imap = failure(check_imap, imap_of(mail), login, timeout=0.5)
    assert smtp.error == imap.error == errors.CONNECTION_TIMEOUT
    assert not smtp.permanent
    assert "AUTH" in smtp.detail and "LOGIN" in imap.detail  # the step that timed out


def test_untrusted_certificate_is_a_tls_failure(mail):
    # Another set of servers, whose certificates come from a CA the client does not trust.
    with ms.MailServers() as strangers:
        strangers.add("fay@contoso.com", "pw")
        login = Login("fay@contoso.com", "pw")
        smtp = failure(check_smtp, smtp_of(strangers), login)
        imap = failure(check_imap, imap_of(strangers), login)
    assert smtp.error == imap.error == errors.TLS_FAILED
    assert "STARTTLS" in smtp.detail


def test_system_cas_do_not_trust_the_test_ca(mail, settings):
    mail.add("gus@contoso.com", "pw")
    settings.MAIL_TLS_CA_FILE = ""  # default: the system's CAs
    assert failure(check_smtp, smtp_of(mail), Login("gus@contoso.com", "pw")).error == (
        errors.TLS_FAILED
    )


def test_xoauth2_with_a_validator(mail):
    mail.add("hal@contoso.com")  # no password: OAuth only
    good = Login("hal@contoso.com", access_token="token-for-hal@contoso.com")
    bad = Login("hal@contoso.com", access_token="stolen")
    assert check_smtp(smtp_of(mail), good).startswith("235 ")
    assert check_imap(imap_of(mail), good).startswith("OK")
    assert failure(check_smtp, smtp_of(mail), bad).error == errors.INVALID_CREDENTIALS
    assert failure(check_imap, imap_of(mail), bad).error == errors.INVALID_CREDENTIALS


def test_xoauth2_is_refused_without_a_validator(mail):
    mail.add("ian@contoso.com")
    validator, mail.token_validator = mail.token_validator, None
    try:
        login = Login("ian@contoso.com", access_token="token-for-ian@contoso.com")
        assert failure(check_imap, imap_of(mail), login).error == errors.INVALID_CREDENTIALS
    finally:
        mail.token_validator = validator


def test_scripted_reply_applies_to_xoauth2_too(mail):
    mail.add("jo@contoso.com", smtp_reply=ms.SMTP_AUTH_DISABLED)
    login = Login("jo@contoso.com", access_token="token-for-jo@contoso.com")
    assert failure(check_smtp, smtp_of(mail), login).error == errors.SMTP_AUTH_DISABLED


def test_reply_code_mapping_is_by_codes_not_text():
    assert smtp_error(535, b"5.7.139 whatever the text says") == errors.SMTP_AUTH_DISABLED
    assert smtp_error(550, b"5.7.30 anything") == errors.BASIC_AUTH_DISABLED
    assert smtp_error(535, b"5.7.3 Authentication unsuccessful") == errors.INVALID_CREDENTIALS
    assert smtp_error(454, b"4.7.0 Temporary authentication failure") == errors.MAIL_SERVER_ERROR


def test_login_repr_hides_secrets():
    login = Login("kim@contoso.com", "secret-pass", "secret-token")
    assert "secret" not in repr(login)


def test_imap_server_reads_literals(mail):
    """Clients send passwords with special characters as literals ({n}); the server reads them."""
    import imaplib

    from fleet.mailproto import tls_context

    mail.add("lee@contoso.com", 'p"a\\ss word')
    client = imaplib.IMAP4_SSL(mail.host, mail.imap_port, ssl_context=tls_context(), timeout=2)
    client.literal = b'p"a\\ss word'
    typ, _ = client._simple_command("LOGIN", "lee@contoso.com")
    client.logout()
    assert typ == "OK"


UNICODE_PASSWORD = "ünïcødé-Pässwörd"


def test_utf8_password_signs_in_over_smtp_plain_and_imap_authenticate_plain(mail):
    """SASL PLAIN carries UTF-8 (RFC 4616); smtplib's and imaplib's own AUTH/LOGIN would raise
    UnicodeEncodeError on these letters."""
    mail.add("zoë@contoso.com", UNICODE_PASSWORD)
    login = Login("zoë@contoso.com", UNICODE_PASSWORD)
    mail.sign_ins.clear()
    assert check_smtp(smtp_of(mail), login).startswith("235 ")
    assert check_imap(imap_of(mail), login).startswith("OK")
    assert mail.sign_ins == [
        ("smtp", "PLAIN", "zoë@contoso.com"),
        ("imap", "PLAIN", "zoë@contoso.com"),
    ]


def test_utf8_password_over_smtp_login_and_imap_login_on_a_utf8_accept_server(mail, monkeypatch):
    """Servers that offer only AUTH LOGIN (SMTP) and no AUTH=PLAIN but UTF8=ACCEPT (IMAP, RFC
    6855): the same UTF-8 credentials through those commands."""
    monkeypatch.setattr(mail, "smtp_exclude_auth", ("PLAIN",))
    monkeypatch.setattr(mail, "imap_auth_plain", False)
    mail.add("ann@contoso.com", UNICODE_PASSWORD)
    login = Login("ann@contoso.com", UNICODE_PASSWORD)
    mail.sign_ins.clear()
    assert check_smtp(smtp_of(mail), login).startswith("235 ")
    assert check_imap(imap_of(mail), login).startswith("OK")
    assert mail.sign_ins == [
        ("smtp", "LOGIN", "ann@contoso.com"),
        ("imap", "LOGIN", "ann@contoso.com"),
    ]


@pytest.mark.parametrize("plain", [True, False])
def test_wrong_utf8_password_is_invalid_credentials(mail, monkeypatch, plain):
    monkeypatch.setattr(mail, "imap_auth_plain", plain)
    monkeypatch.setattr(mail, "smtp_exclude_auth", () if plain else ("PLAIN",))
    mail.add("cat@contoso.com", UNICODE_PASSWORD)
    login = Login("cat@contoso.com", UNICODE_PASSWORD.upper())
    assert failure(check_smtp, smtp_of(mail), login).error == errors.INVALID_CREDENTIALS
    imap = failure(check_imap, imap_of(mail), login)
    assert imap.error == errors.INVALID_CREDENTIALS
    assert imap.detail.startswith("IMAP AUTHENTICATE" if plain else "IMAP LOGIN")
