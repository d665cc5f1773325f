"""What the receiving server says about a message's sender: its Authentication-Results (RFC 8601).

The command gate (``sender_gate``) asks one question of them: does DMARC, or a DKIM or SPF pass
aligned with the From domain, vouch for the sender? Only the topmost header of a trusted server
counts, because the server prepends its own above whatever the message arrived with. The header's
grammar (comments, quoted strings, versions, ``none`` results) lives here, apart from the gate's
rules, so each can be read and tested on its own. Pure: a header value in, a verdict out.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from inboxcrm.values import Email


@dataclass(frozen=True)
class AuthResult:
    verdict: str  # pass | fail | none
    detail: str  # e.g. "mx.team.example: dmarc=pass header.from=team.example"


class _Method(NamedTuple):
    method: str  # lower-case, version dropped: "dkim/1" -> "dkim"
    result: str  # lower-case
    props: Mapping[str, str]  # "header.from" -> "team.example", keys lower-case


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) with kind "word", "quoted", ";" or "="; comments (nested, with quoted-pairs)
    and folding whitespace dropped. A quoted string is one token, so a ";" inside it splits nothing."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace() or c == ")":  # a stray ")" is noise, not the end of anything
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                if text[i] == "\\":
                    i += 2
                    continue
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
                if depth == 0:
                    break
        elif c == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            tokens.append(("quoted", "".join(value)))
        elif c in ";=":
            tokens.append((c, c))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '();="':
                j += 1
            tokens.append(("word", text[i:j]))
            i = j
    return tokens


def _glued(words: list[str]) -> str:
    """The key just before an "=": RFC 8601 allows CFWS around the "." of ``header . from`` and the
    "/" of ``dkim / 1``, so words that meet at a "." or "/" are one key; anything before is junk."""
    key = words[-1]
    for word in reversed(words[:-1]):
        if word in (".", "/") or key in (".", "/") or word.endswith((".", "/")) or key.startswith((".", "/")):
            key = word + key
        else:
            break
    return key


def _pairs(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """key=value pairs in order; tokens that fit no pair (a malformed or unknown part) are skipped."""
    pairs, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j][0] == "word":
            j += 1
        if j > i and j + 1 < len(tokens) and tokens[j][0] == "=" and tokens[j + 1][0] in ("word", "quoted"):
            pairs.append((_glued([text for _, text in tokens[i:j]]).lower(), tokens[j + 1][1]))
            i = j + 2
        else:
            i = max(j, i + 1)
    return pairs


def _parse(value: str) -> tuple[str, list[_Method]]:
    """(authserv-id lower-case, method results); ("", []) when the header names no authserv-id,
    as Exchange Online writes it: such a header cannot be attributed to a server, so it counts for nothing."""
    segments: list[list[tuple[str, str]]] = [[]]
    for token in _tokens(value):
        if token[0] == ";":
            segments.append([])
        else:
            segments[-1].append(token)
    head = segments[0]
    if not head or head[0][0] not in ("word", "quoted") or (len(head) > 1 and head[1][0] == "="):
        return "", []
    methods = []
    for segment in segments[1:]:  # a bare "none" (no authentication done) yields no pairs: no result
        pairs = _pairs(segment)
        if pairs:
            (method, result), props = pairs[0], {}
            for key, text in pairs[1:]:
                props.setdefault(key, text)
            methods.append(_Method(method.split("/")[0].strip(), result.lower(), props))
    return head[0][1].strip().lower(), methods


def _domain(value: str) -> str:
    """The domain of ``user@domain``, ``@domain`` or ``domain``, lower-case, without a root dot."""
    return value.rpartition("@")[2].strip().rstrip(".").lower()


def _aligned(a: str, b: str) -> bool:
    """Relaxed alignment: equal, or one a subdomain of the other at a label boundary. The shared
    part must have a dot, so a bare top-level domain aligns with nothing."""
    if not a or not b:
        return False
    if a == b:
        return "." in a
    shorter, longer = sorted((a, b), key=len)
    return "." in shorter and longer.endswith("." + shorter)


_SHOWN = ("header.from", "header.d", "header.i", "smtp.mailfrom")


def _describe(found: _Method) -> str:
    props = " ".join(f"{key}={found.props[key][:80]}" for key in _SHOWN if key in found.props)
    return f"{found.method}={found.result[:20]}" + (f" {props}" if props else "")


def _judge(methods: list[_Method], sender_domain: str) -> tuple[str, str]:
    dmarc = [m for m in methods if m.method == "dmarc"]
    for m in dmarc:  # the server judged another From than ours: a second From header, or not this mail
        judged = _domain(m.props.get("header.from", ""))
        if judged and judged != sender_domain:
            return "fail", f"{_describe(m)}, but the From address is at {sender_domain or 'no domain'}"
    for m in dmarc:
        if m.result == "fail":
            return "fail", _describe(m)
    for m in dmarc:
        if m.result == "pass":
            return "pass", _describe(m)
    # No DMARC verdict (none: the domain publishes no policy; temperror, permerror): alignment decides.
    for m in methods:
        if m.method == "dkim" and m.result == "pass":
            signer = _domain(m.props.get("header.d", "")) or _domain(m.props.get("header.i", ""))
            if _aligned(signer, sender_domain):
                return "pass", _describe(m)
        if m.method == "spf" and m.result == "pass" and _aligned(_domain(m.props.get("smtp.mailfrom", "")),
                                                                 sender_domain):
            return "pass", _describe(m)
    known = [_describe(m) for m in methods if m.method in ("dmarc", "dkim", "spf")]
    if not known:
        return "none", "no DMARC, DKIM or SPF result"
    return "fail", (f"{', '.join(known)}: neither a DMARC pass nor a DKIM or SPF pass aligned with "
                    f"{sender_domain or 'the From domain'}")


def authenticate(email: Email, trusted_authserv_ids: frozenset[str]) -> AuthResult:
    """What the topmost trusted Authentication-Results header says about the From domain.

    The receiving server prepends its header above everything the message arrived with, so only
    the topmost one with its authserv-id is its own; one further down with the same id could have
    been written by the sender. Headers of other servers say nothing we can trust."""
    trusted = frozenset(i.strip().lower() for i in trusted_authserv_ids)
    if not trusted:
        return AuthResult("none", "no authserv-id is trusted, so no Authentication-Results header counts")
    sender_domain = email.from_.domain if email.from_ else ""
    for value in email.header_all("authentication-results"):
        server, methods = _parse(value)
        if server in trusted:
            verdict, detail = _judge(methods, sender_domain)
            if verdict == "none":
                detail = f"{server} reports {detail} (it authenticated nothing)"
                return AuthResult("none", detail)
            return AuthResult(verdict, f"{server}: {detail}")
    return AuthResult("none", f"no Authentication-Results header from a trusted server ({', '.join(sorted(trusted))})")
