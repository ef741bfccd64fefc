"""Secret values never reach a log, a run record or a page in plain text.

A pipeline rarely prints a secret as it is: it logs a URL with the password quoted, an
`Authorization: Basic` header, a JSON body, one line of a PEM key. `Masker` replaces each
secret in those forms too:

- the value itself (4 characters or more);
- each line of a multi-line value (8 characters or more);
- its base64 (standard and URL-safe, with and without padding), also where it sits inside
  a longer base64 text (the characters that depend only on the secret, at each of the three
  byte alignments) — so `user:secret` encoded for Basic auth is masked;
- its URL-encoded forms (`quote`, `quote_plus`);
- its JSON-escaped form (quotes, backslashes, control and non-ASCII characters escaped).

Masking more than needed is the safe side: a short run of base64 characters that happens
to match is hidden too.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 4
MIN_LINE_LENGTH = 8
# A base64 fragment of a secret inside longer base64 text is only masked from this length
# on; shorter fragments would hide ordinary words.
MIN_EMBEDDED_BASE64 = 8


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        for shift in (1, 2):
            # `shift` bytes of something else before the secret: the characters that
            # encode only the secret's bits are the same whatever those bytes are.
            encoded = encode(b"\0" * shift + raw).decode().rstrip("=")
            start = -(-8 * shift // 6)  # ceil
            end = (8 * (shift + len(raw))) // 6
            core = encoded[start:end]
            if len(core) >= MIN_EMBEDDED_BASE64:
                forms.add(core)
        core = whole.rstrip("=")[: (8 * len(raw)) // 6]
        if len(core) >= MIN_EMBEDDED_BASE64:
            forms.add(core)
    return forms


def secret_forms(secret: str) -> set[str]:
    """Every form of `secret` that is masked (empty for values too short to mask)."""
    if len(secret) < MIN_SECRET_LENGTH:
        return set()
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms |= _base64_forms(secret.encode())
    lines = [line.strip() for line in secret.splitlines()]
    if len(lines) > 1:
        for line in lines:
            if len(line) >= MIN_LINE_LENGTH:
                forms |= {line, *_base64_forms(line.encode())}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Masker:
    """`masker(text)` is `text` with every form of every secret replaced by ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            forms |= secret_forms(secret)
        # Longest first, so a secret's base64 is not half-masked by a shorter form.
        ordered = sorted(forms, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self.pattern is not None

    def __call__(self, text: str) -> str:
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(MASK, text)
