"""Authentication-Results as receiving servers write them: which header counts (the topmost of a
trusted server), which verdict vouches for the From domain (DMARC, else aligned DKIM or SPF), and
what the detail tells an admin."""
from __future__ import annotations

import pytest

from inboxcrm.core.auth_results import AuthResult, authenticate

from .test_sender_gate import FAIL, PASS, TRUSTED, ar, mail


@pytest.mark.parametrize("headers, verdict, detail", [
    (ar(PASS), "pass", "mx.team.example: dmarc=pass header.from=team.example"),
    (ar(FAIL), "fail", "mx.team.example: dmarc=fail header.from=team.example"),
    ((), "none", "no Authentication-Results header from a trusted server (mx.team.example)"),
    (ar("mx.team.example; none"), "none", "mx.team.example reports no DMARC, DKIM or SPF result"),
    (ar("mx.team.example; iprev=pass policy.iprev=10.0.0.1; auth=pass smtp.auth=alice"), "none",
     "mx.team.example reports no DMARC, DKIM or SPF result"),
    (ar("mx.team.example; dkim=pass header.d=evil.example"), "fail",
     "mx.team.example: dkim=pass header.d=evil.example: neither a DMARC pass nor a DKIM or SPF pass aligned with "
     "team.example"),
    (ar("mx.team.example; dmarc=pass header.from=evil.example"), "fail",
     "mx.team.example: dmarc=pass header.from=evil.example, but the From address is at team.example"),
    (ar('"mx.team.example" ; dmarc = pass header.from = team.example'), "pass",
     "mx.team.example: dmarc=pass header.from=team.example"),
    (ar("mx.team.example; dkim=pass header.d=example"), "fail", "mx.team.example: dkim=pass header.d=example"),
    (ar("mx.team.example; dkim=fail header.d=team.example; dkim=pass header.d=team.example"), "pass",
     "mx.team.example: dkim=pass header.d=team.example"),
    (ar("mx.team.example; dmarc=pass (unbalanced ( comment header.from=team.example"), "pass",
     "mx.team.example: dmarc=pass"),
    (ar("mx.team.example; dmarc=pass header.from=team.example."), "pass",
     "mx.team.example: dmarc=pass header.from=team.example."),
])
def test_authenticate(headers, verdict, detail):
    result = authenticate(mail(headers=headers), TRUSTED)
    assert result.verdict == verdict
    assert result.detail.startswith(detail), result.detail


def test_a_header_without_authserv_id_counts_for_nothing():
    """Exchange Online writes its results without an authserv-id: no server can be trusted for them."""
    email = mail(headers=ar("dmarc=pass action=none header.from=team.example"))
    assert authenticate(email, frozenset({"dmarc"})).verdict == "none"


def test_authenticate_trusts_nothing_without_trusted_ids():
    assert authenticate(mail(), frozenset()) == AuthResult(
        "none", "no authserv-id is trusted, so no Authentication-Results header counts")
