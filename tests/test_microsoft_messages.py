"""Microsoft's error texts end in support identifiers ("\\r\\nTrace ID: …\\r\\nCorrelation ID: …\\r\\n
Timestamp: …"): kept out of stored messages, kept on one line beside them for support."""

from fleet.microsoft.http import error_from_parts, trace_of, without_trace
from fleet.microsoft.identity import error_for

DESCRIPTION = (
    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request "
    "is the client secret value, not the client secret ID.\r\nTrace ID: 0b1c-trace\r\n"
    "Correlation ID: 77aa-corr\r\nTimestamp: 2026-01-27 10:00:00Z"
)


def test_the_tail_is_split_off():
    assert without_trace(DESCRIPTION).endswith("not the client secret ID.")
    assert trace_of(DESCRIPTION) == (
        "Trace ID: 0b1c-trace; Correlation ID: 77aa-corr; Timestamp: 2026-01-27 10:00:00Z"
    )
    assert without_trace("No tail here.") == "No tail here." and trace_of("No tail") == ""


def test_token_errors_and_graph_errors_are_stored_without_it():
    failure = error_for(
        {"error": "invalid_client", "error_description": DESCRIPTION, "error_codes": [7000215]}
    )
    assert failure.code == "CLIENT_SECRET_INVALID" and "Trace ID" not in failure.message
    error = error_from_parts(401, {}, {"error": "invalid_client", "error_description": DESCRIPTION})
    assert "Trace ID" not in error.message and error.trace.startswith("Trace ID: 0b1c-trace")
