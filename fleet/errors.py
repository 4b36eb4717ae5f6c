"""The error catalogue: every error code Fleet shows, in one place.

Admin badges, API responses, webhook payloads and tests all read from here. Codes are stable
UPPER_SNAKE strings; the seed documents' codes and texts are kept word for word. Microsoft's own
signals are mapped to these codes by their codes (AADSTS numbers, Graph error codes, SMTP reply
codes), never by message text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    message: str
    hint: str
    permanent: bool = True  # False: trying again later may succeed

    def __str__(self) -> str:
        return self.code


CATALOGUE: dict[str, ErrorCode] = {}


def define(code: str, message: str, hint: str, *, permanent: bool = True) -> ErrorCode:
    if code in CATALOGUE:
        raise ValueError(f"error code {code} defined twice")
    CATALOGUE[code] = ErrorCode(code, message, hint, permanent)
    return CATALOGUE[code]


def get(code: str | None) -> ErrorCode | None:
    return CATALOGUE.get(code) if code else None


def choices() -> list[tuple[str, str]]:
    return [(e.code, f"{e.code} — {e.message}") for e in sorted(CATALOGUE.values(), key=str)]


class FleetError(Exception):
    """An error with a catalogue code; `detail` adds the particulars (row, address, …)."""

    def __init__(self, error: ErrorCode, detail: str = ""):
        self.error = error
        self.detail = detail
        super().__init__(f"{error.code}: {detail or error.message}")

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def message(self) -> str:
        return self.detail or self.error.message


# --- Seeds (texts kept word for word) ---------------------------------------------------------
MICROSOFT_OAUTH_NOT_CONFIGURED = define(
    "MICROSOFT_OAUTH_NOT_CONFIGURED",
    "Microsoft OAuth not configured",
    "A manager adds a credential of kind 'OAuth app' for this workspace (Credentials → Add), "
    "with the client id, client secret and redirect URI of its Entra ID app registration.",
)
VALIDATION_ERROR = define(
    "VALIDATION_ERROR",
    "The request is not valid",
    "Correct the fields named in the message and send it again.",
)
WRONG_ALIAS = define(
    "WRONG_ALIAS",
    "The address is an alias of another mailbox",
    "Add the mailbox by its primary address (named in the message); aliases cannot sign in.",
)
INVALID_CREDENTIAL_ID = define(
    "INVALID_CREDENTIAL_ID",
    "No valid Microsoft Graph credential was given",
    "Pick a Graph app-only credential of this workspace that is verified valid, or leave it "
    "out when the workspace has exactly one valid Graph credential.",
)

# --- Foundation -------------------------------------------------------------------------------
SECRET_UNREADABLE = define(
    "SECRET_UNREADABLE",
    "A stored secret cannot be decrypted with the configured keys",
    "An administrator adds the missing key to FIELD_ENCRYPTION_KEYS (keep old keys after the "
    "new one until `manage.py reencrypt_secrets` has run), or sets the secret again.",
)
PERMISSION_DENIED = define(
    "PERMISSION_DENIED",
    "Your role in this workspace does not allow this",
    "Ask an owner of the workspace for the role the action needs.",
)
NOT_FOUND = define(
    "NOT_FOUND",
    "Requested resource does not exist",
    "Check the identifier; objects of workspaces you do not belong to are not visible.",
)

# --- JSON API (fleet/api/) --------------------------------------------------------------------
API_KEY_MISSING = define(
    "API_KEY_MISSING",
    "API key required",
    "Send the key in the X-Api-Key header, or as Authorization: Bearer <key>.",
)
API_KEY_INVALID = define(
    "API_KEY_INVALID",
    "Invalid api key",
    "Check that the whole key was copied; a manager creates a new one under API keys if lost.",
)
API_KEY_REVOKED = define(
    "API_KEY_REVOKED",
    "This API key was revoked",
    "Create a new key under API keys in the admin.",
)
PLATFORM_KEY_REQUIRED = define(
    "PLATFORM_KEY_REQUIRED",
    "Only a platform API key (sk_user_…) can do this",
    "Use a platform key, which a user creates for themselves under API keys.",
)
OUTSIDE_KEY_WORKSPACE = define(
    "OUTSIDE_KEY_WORKSPACE",
    "This workspace API key reaches its own workspace only",
    "Use that workspace's key, or a platform key of a member of both workspaces.",
)
WORKSPACE_REQUIRED = define(
    "WORKSPACE_REQUIRED",
    "Name the workspace: this key reaches several",
    "Add ?workspace_id=<id> to the URL (GET /api/v1/workspaces lists them), or use a workspace key.",
)
API_RATE_LIMITED = define(
    "API_RATE_LIMITED",
    "Too many requests for this API key",
    "Wait the number of seconds in the Retry-After header, then send the request again.",
    permanent=False,
)
API_REQUEST_TOO_LARGE = define(
    "API_REQUEST_TOO_LARGE",
    "The request body is too large",
    "Send a smaller body (the limit is API_MAX_REQUEST_BYTES); split large imports.",
)
API_MALFORMED_REQUEST = define(
    "API_MALFORMED_REQUEST",
    "Invalid or empty JSON request body",
    "Send a body in the declared Content-Type (see the API schema).",
)
API_METHOD_NOT_ALLOWED = define(
    "API_METHOD_NOT_ALLOWED",
    "This method is not allowed here",
    "See the API schema for the methods each path accepts.",
)
API_UNSUPPORTED_MEDIA_TYPE = define(
    "API_UNSUPPORTED_MEDIA_TYPE",
    "This Content-Type is not accepted here",
    "Send application/json (or multipart/form-data where the schema says so).",
)
API_NOT_ACCEPTABLE = define(
    "API_NOT_ACCEPTABLE",
    "The API answers in application/json only",
    "Send Accept: application/json, or no Accept header.",
)
INTERNAL_ERROR = define(
    "INTERNAL_ERROR",
    "An unexpected error has occurred. Please try again later.",
    "Try again; if it persists, give the administrator the X-Request-Id of the response.",
    permanent=False,
)

# --- Microsoft OAuth consent and tokens ---------------------------------------------------------
STATE_INVALID = define(
    "STATE_INVALID",
    "This sign-in link is not valid or was already used",
    "Open the consent link you were given again to start a new sign-in; each sign-in can be "
    "completed once.",
)
STATE_EXPIRED = define(
    "STATE_EXPIRED",
    "This sign-in took too long and has expired",
    "Open the consent link you were given again and complete the Microsoft sign-in within "
    "15 minutes.",
)
MAILBOX_MISMATCH = define(
    "MAILBOX_MISMATCH",
    "You signed in with a different Microsoft account than the mailbox being connected",
    "Open the consent link again and sign in as the mailbox's own address (use 'Use another "
    "account' on Microsoft's page). Nothing was stored.",
)
CONSENT_DENIED = define(
    "CONSENT_DENIED",
    "The permissions were declined on Microsoft's consent page",
    "Open the consent link again and choose Accept; Fleet needs these permissions to send and "
    "read mail for this mailbox.",
)
ADMIN_APPROVAL_REQUIRED = define(
    "ADMIN_APPROVAL_REQUIRED",
    "The organisation requires an administrator to approve this app",
    "Send the admin-consent link to a Global or Application Administrator of the tenant; once "
    "they accept, open the consent link again.",
)
REAUTH_REQUIRED = define(
    "REAUTH_REQUIRED",
    "Microsoft no longer accepts this mailbox's sign-in (grant revoked or expired)",
    "Use the Reconnect action and have the mailbox owner sign in and accept again (a password "
    "change or an administrator's revocation ends the grant).",
)
CREDENTIAL_REJECTED = define(
    "CREDENTIAL_REJECTED",
    "Microsoft rejected the app registration's client id or secret",
    "A manager checks the credential's client id and sets a current client secret (Entra ID → "
    "App registrations → Certificates & secrets).",
)
MICROSOFT_UNAVAILABLE = define(
    "MICROSOFT_UNAVAILABLE",
    "Microsoft did not answer or asked to slow down",
    "Nothing to change: Fleet tries again later. If it persists, check Microsoft 365 service "
    "health and this server's network access to Microsoft.",
    permanent=False,
)
MICROSOFT_OAUTH_FAILED = define(
    "MICROSOFT_OAUTH_FAILED",
    "Microsoft refused the sign-in",
    "Read the message for Microsoft's reason (an AADSTS code); start the consent again once it "
    "is fixed.",
)
CONSENT_REQUEST_CLOSED = define(
    "CONSENT_REQUEST_CLOSED",
    "This consent link is no longer open",
    "Ask the person who sent it for a new consent link (links expire, and a completed or "
    "cancelled consent cannot be reused).",
)
NOTHING_TO_RECONNECT = define(
    "NOTHING_TO_RECONNECT",
    "No mailbox of this selection needs reconnecting",
    "Reconnect all failing asks for consent again from OAuth mailboxes in reauth_required; "
    "app-password mailboxes in error are fixed by a new password or the move off Basic auth.",
)
EMAIL_NOT_SENT = define(
    "EMAIL_NOT_SENT",
    "The e-mail could not be sent",
    "Check Fleet's outgoing mail settings (EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, "
    "EMAIL_USE_TLS, DEFAULT_FROM_EMAIL) and that the mail server accepts Fleet; then send again.",
    permanent=False,
)
MAILBOX_NOT_APPROVED = define(
    "MAILBOX_NOT_APPROVED",
    "This mailbox is waiting for a manager's approval",
    "A manager checks that the mailbox was expected, then uses the Approve action (or deletes "
    "it); warmup can start after that.",
)
MAILBOX_NOT_ACTIVE = define(
    "MAILBOX_NOT_ACTIVE",
    "Warmup needs a connected (active) mailbox",
    "The message says which status blocks it. Fix the mailbox's error (its hint says how: a new "
    "app password, Reconnect for reauth, Enable for a disabled one), test the connection until "
    "it is active, then start warmup.",
)
MAILBOX_DISABLED = define(
    "MAILBOX_DISABLED",
    "This mailbox is disabled",
    "A manager enables it (Enable); it is tested again at once.",
)
WARMUP_NOT_RUNNING = define(
    "WARMUP_NOT_RUNNING",
    "Warmup is not running, so it cannot be paused",
    "Nothing to do: start warmup first if the mailbox should warm up.",
)
WARMUP_NOT_PAUSED = define(
    "WARMUP_NOT_PAUSED",
    "Warmup is not paused, so it cannot be resumed",
    "Use Start warmup for a mailbox whose warmup has not started; a running warmup needs nothing.",
)
NO_TOTP_SECRET = define(
    "NO_TOTP_SECRET",
    "This mailbox has no TOTP secret",
    "Set the TOTP secret on the mailbox (or import it with a totpsecret column) to show codes.",
)

# --- Deliverability ---------------------------------------------------------------------------
DNS_LOOKUP_FAILED = define(
    "DNS_LOOKUP_FAILED",
    "The domain's SPF/DKIM records could not be looked up",
    "The DNS servers did not answer (timeout or SERVFAIL). Check DNS_NAMESERVERS, or run the "
    "check again later; the mailbox itself is not affected.",
    permanent=False,
)

# --- Mailbox connection tests (SMTP/IMAP) -----------------------------------------------------
# Mapped from SMTP reply and enhanced status codes and IMAP tagged responses, never from text.
# https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission
SMTP_AUTH_DISABLED = define(
    "SMTP_AUTH_DISABLED",
    "SMTP AUTH is disabled for this mailbox or its tenant (535 5.7.139)",
    "A Microsoft 365 admin enables Authenticated SMTP for the mailbox (Microsoft 365 admin "
    "center → user → Mail → Manage email apps → Authenticated SMTP, or Set-CASMailbox "
    "-SmtpClientAuthenticationDisabled $false), and for the tenant if it is off there; security "
    "defaults also block it and must then be turned off or replaced by OAuth — the move plan "
    "(Mailboxes → Move off Basic auth) moves app-password mailboxes to OAuth.",
)
BASIC_AUTH_DISABLED = define(
    "BASIC_AUTH_DISABLED",
    "Basic authentication is not supported for this mailbox (550 5.7.30)",
    "Microsoft no longer accepts app passwords for this mailbox (Basic auth is turned off for "
    "its tenant): move it to OAuth from the move plan (Mailboxes → Move off Basic auth), by the "
    "tenant's app-only credential or by the owner's consent.",
)
INVALID_CREDENTIALS = define(
    "INVALID_CREDENTIALS",
    "The server rejected the address or the app password",
    "Check the address and create a new app password (account.microsoft.com → Security → "
    "Advanced security options → App passwords; needs two-step verification), then set it "
    "on the mailbox and test the connection again.",
)
CONNECTION_REFUSED = define(
    "CONNECTION_REFUSED",
    "The mail server refused the connection",
    "Check the host and port on the mailbox (SMTP smtp.office365.com:587, IMAP "
    "outlook.office365.com:993) and that outbound connections on those ports are allowed.",
    permanent=False,
)
CONNECTION_TIMEOUT = define(
    "CONNECTION_TIMEOUT",
    "The mail server did not answer in time",
    "Usually temporary: test the connection again later. If it persists, check the host, "
    "port and any firewall between Fleet and the server.",
    permanent=False,
)
CONNECTION_FAILED = define(
    "CONNECTION_FAILED",
    "The connection to the mail server failed",
    "Test again later; if it persists, check the host and port on the mailbox.",
    permanent=False,
)
HOST_NOT_FOUND = define(
    "HOST_NOT_FOUND",
    "The mail server's host name does not resolve",
    "Correct the SMTP/IMAP host on the mailbox, or check the DNS resolver of the Fleet server.",
)
TLS_FAILED = define(
    "TLS_FAILED",
    "The secure (TLS) connection to the mail server failed",
    "Check that the host name matches the server's certificate and the security setting "
    "(STARTTLS on 587, SSL on 993); an administrator sets MAIL_TLS_CA_FILE when a private CA "
    "signs the server's certificate.",
)
AUTH_MECHANISM_UNAVAILABLE = define(
    "AUTH_MECHANISM_UNAVAILABLE",
    "The mail server offers no sign-in method Fleet can use",
    "Check the host and port on the mailbox: Microsoft's servers offer AUTH LOGIN/XOAUTH2 "
    "after STARTTLS on port 587.",
)
MAIL_SERVER_ERROR = define(
    "MAIL_SERVER_ERROR",
    "The mail server answered with an unexpected error",
    "Read the server's reply in the message; test again later if it is temporary (4xx).",
    permanent=False,
)
NO_MAIL_CREDENTIAL = define(
    "NO_MAIL_CREDENTIAL",
    "The mailbox has no app password or access token to sign in with",
    "Set the app password on the mailbox (or connect it by OAuth), then test it again.",
)

# --- App registrations (client credentials) ------------------------------------------------------
# AADSTS numbers: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
CLIENT_SECRET_INVALID = define(
    "CLIENT_SECRET_INVALID",
    "Microsoft rejected the client secret (AADSTS7000215)",
    "A manager copies the secret's Value (not its Secret ID) from Entra ID → App registrations → "
    "Certificates & secrets into the credential, then runs Verify again.",
)
CLIENT_SECRET_EXPIRED = define(
    "CLIENT_SECRET_EXPIRED",
    "The app registration's client secret has expired (AADSTS7000222)",
    "A manager creates a new client secret in Entra ID → App registrations → Certificates & "
    "secrets, sets it and its expiry date on the credential, then runs Verify again.",
)
APP_NOT_FOUND_IN_TENANT = define(
    "APP_NOT_FOUND_IN_TENANT",
    "The app registration was not found in this tenant (AADSTS700016)",
    "Check the credential's client id and tenant id; a multi-tenant app must be consented to in "
    "the customer's tenant first (use 'Request tenant admin consent').",
)
TENANT_NOT_FOUND = define(
    "TENANT_NOT_FOUND",
    "Microsoft does not know this tenant (AADSTS90002)",
    "Set the credential's tenant id to the customer's directory (tenant) ID or one of its "
    "verified domains, as shown in Entra ID → Overview.",
)

# --- Graph app-only bulk add (Woodpecker's bulk-add API) --------------------------------------------------------------
MAILBOX_NOT_FOUND = define(
    "MAILBOX_NOT_FOUND",
    "No user or alias with this address exists in the tenant",
    "Check the address for typos and that it belongs to the tenant of the chosen credential.",
)
MAILBOX_NOT_ENABLED = define(
    "MAILBOX_NOT_ENABLED",
    "The user has no Exchange Online mailbox (MailboxNotEnabledForRESTAPI)",
    "Assign the user a licence that includes Exchange Online (or move an on-premises mailbox to "
    "Exchange Online), wait for the mailbox to be provisioned, then add it again.",
)
ACCESS_DENIED = define(
    "ACCESS_DENIED",
    "Microsoft Graph denied the app access to this mailbox",
    "An Exchange administrator adds the mailbox to the app's application access policy (or RBAC "
    "for Applications scope) and checks that the app has the User.Read.All and "
    "MailboxSettings.Read application permissions with admin consent.",
)
THROTTLED = define(
    "THROTTLED",
    "Microsoft Graph kept asking to slow down (429) and the retries ran out",
    "Nothing is wrong with the mailbox: run the bulk add again later; mailboxes already connected "
    "are updated, not duplicated.",
    permanent=False,
)
GRAPH_UNAVAILABLE = define(
    "GRAPH_UNAVAILABLE",
    "Microsoft Graph did not answer (5xx or network failure) and the retries ran out",
    "Run the bulk add again later. If it persists, check Microsoft 365 service health and this "
    "server's network access to Microsoft Graph.",
    permanent=False,
)
GRAPH_REQUEST_FAILED = define(
    "GRAPH_REQUEST_FAILED",
    "Microsoft Graph refused the request",
    "Read the message for Graph's error code; it usually names a missing permission or a "
    "malformed address.",
)
BULK_ADD_INTERRUPTED = define(
    "BULK_ADD_INTERRUPTED",
    "The bulk add stopped before this mailbox was checked",
    "Run the same list again: mailboxes already connected are updated, not duplicated.",
    permanent=False,
)

# --- Moving off Basic auth (app-only SMTP/IMAP, the move plan) --------------------------------------
# https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
APP_PERMISSION_MISSING = define(
    "APP_PERMISSION_MISSING",
    "The app registration lacks an application permission Fleet needs",
    "In Entra ID → App registrations → the app → API permissions, add the application permission "
    "named in the message (User.Read.All and MailboxSettings.Read under Microsoft Graph; "
    "IMAP.AccessAsApp and SMTP.SendAsApp under Office 365 Exchange Online), then Grant admin "
    "consent (or use 'Request tenant admin consent') and Verify the credential again.",
)
APP_NOT_GRANTED_ON_MAILBOX = define(
    "APP_NOT_GRANTED_ON_MAILBOX",
    "Exchange did not let the app sign in to this mailbox (app-only XOAUTH2 refused)",
    "An Exchange administrator registers the app's service principal and grants it the mailbox: "
    "New-ServicePrincipal -AppId <client id> -ObjectId <enterprise app object id>, then "
    "Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights "
    "FullAccess (or scope it with RBAC for Applications: New-ManagementRoleAssignment -App … "
    "-Role 'Application IMAP.AccessAsApp' / 'Application SMTP.SendAsApp'); then move or test "
    "the mailbox again.",
)
ALREADY_CONNECTED = define(
    "ALREADY_CONNECTED",
    "The mailbox is already connected by Microsoft OAuth consent; it was kept as it is",
    "Nothing to do. To switch it to Graph app-only anyway (its token upkeep then stops), run the "
    "bulk add again with 'convert' set.",
)
MOVE_BLOCKED = define(
    "MOVE_BLOCKED",
    "This mailbox cannot be moved off Basic auth as it is",
    "Read the reason in the message (a disabled mailbox, a tenant Fleet could not identify, no "
    "OAuth app for consent); fix it, then open the move plan again.",
)
MOVE_INTERRUPTED = define(
    "MOVE_INTERRUPTED",
    "The move stopped before this mailbox was handled",
    "Nothing was changed on it. Start the move again from the move plan: mailboxes already moved "
    "are not touched twice.",
    permanent=False,
)
