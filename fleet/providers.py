"""Where a mailbox signs in: the provider of an address and its SMTP/IMAP servers.

One rule for every way a mailbox comes in (CSV import, OAuth consent, Graph bulk add): consumer
Outlook.com addresses (outlook.com, hotmail.*, live.*, msn.com, …) are `outlook_com` and read
mail on imap-mail.outlook.com; every other domain is Microsoft 365 on outlook.office365.com.
Both submit on smtp.office365.com:587 with STARTTLS.
https://support.microsoft.com/office/pop-imap-and-smtp-settings-for-outlook-com-d088b986-291d-42b8-9564-9c414e2aa040
https://learn.microsoft.com/exchange/mail-emails/how-to-set-up-a-multifunction-device-or-application-to-send-email-using-microsoft-365-or-office-365
"""

from __future__ import annotations

import re

from django.conf import settings

from fleet.microsoft.identity import CONSUMER_TENANT_ID
from fleet.models import Provider, Security

# Microsoft's consumer mail domains, country variants included (hotmail.co.uk, live.fr, …).
CONSUMER_DOMAIN = re.compile(r"^(hotmail|live|outlook|msn|passport|windowslive)\.[a-z.]+$")
# Microsoft 365 host names that the pattern above would take for consumer domains.
NOT_CONSUMER = {"outlook.office365.com", "outlook.office.com"}


def domain_of(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower()


def is_consumer(email: str, tenant_id: str = "") -> bool:
    """An Outlook.com (personal Microsoft account) address, by its domain or by the tenant a
    sign-in came from."""
    if tenant_id and tenant_id.lower() == CONSUMER_TENANT_ID:
        return True
    domain = domain_of(email)
    return bool(CONSUMER_DOMAIN.match(domain)) and domain not in NOT_CONSUMER


def provider_of(email: str, tenant_id: str = "") -> str:
    return Provider.OUTLOOK_COM if is_consumer(email, tenant_id) else Provider.MICROSOFT365


def server_settings(email: str, tenant_id: str = "") -> dict[str, object]:
    """Provider and SMTP/IMAP servers of a new mailbox. Microsoft's hosts unless the MAIL_*
    settings say otherwise (the demo points them at the sandbox's mail servers)."""
    consumer = is_consumer(email, tenant_id)
    return {
        "provider": Provider.OUTLOOK_COM if consumer else Provider.MICROSOFT365,
        "smtp_host": settings.MAIL_SMTP_HOST,
        "smtp_port": settings.MAIL_SMTP_PORT,
        "smtp_security": Security.STARTTLS,
        "imap_host": settings.MAIL_IMAP_CONSUMER_HOST if consumer else settings.MAIL_IMAP_HOST,
        "imap_port": settings.MAIL_IMAP_PORT,
        "imap_security": Security.SSL,
    }
