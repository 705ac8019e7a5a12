"""Personal CMDB fields, kept in the lake only as SM4 tokens from bronze to gold (S6.6b).

The CMDB parser seals each CI owner's contact (a personal phone number or e-mail address;
the CMDB model has one free-text contact field, which carries either) while it reads an
export, so no bronze, silver or gold file holds one in clear. Silver and the asset ledger
carry that one token on; the API opens it for roles allowed to see personal data. Tokens
are deterministic (opslake.security.crypto: equal contact, equal token under one key), so
re-materialising a partition writes identical rows and the CMDB history (SCD-2) sees an
unchanged contact as unchanged. After a key rotation :func:`reseal` brings tokens of a
previous key under the current one, which silver does on every build.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from opslake.security.crypto import PREFIX, FieldCipher

#: Field context of the CI owner's contact, authenticated with its token in every layer.
OWNER_CONTACT = "cmdb.owner_contact"
#: Names of source fields that hold contact data (phone, mobile, e-mail): sealed wherever a
#: CMDB record is kept whole, e.g. the quarantine copy of a rejected record.
CONTACT_FIELD = re.compile(r"contact|phone|mobile|mail|(?<![a-z])tel(?![a-z])", re.IGNORECASE)

#: Seals one value for one field context: ``(text, context) → token``.
Seal = Callable[[str, str], str]


def sealer(cipher: FieldCipher) -> Seal:
    """Deterministic sealing under the current key, cached (an export repeats contacts)."""

    @functools.lru_cache(maxsize=1 << 16)
    def seal(text: str, context: str) -> str:
        return cipher.encrypt(text, context, deterministic=True)

    return seal


def reseal(
    tokens: pa.Array | pa.ChunkedArray, context: str, cipher: FieldCipher
) -> pa.Array | pa.ChunkedArray:
    """``tokens`` with each one sealed under a previous key re-sealed under the current key.

    Tokens of the current key are kept as they are, without decrypting them; anything that
    is not a token (a clear value) is refused with SecurityError rather than passed on.
    """
    current = f"{PREFIX}{cipher.key_id}:"
    if (
        pc.all(pc.or_kleene(pc.is_null(tokens), pc.starts_with(tokens, current))).as_py()
        is not False
    ):
        return tokens
    opened: dict[str, str] = {}
    out = []
    for token in tokens.to_pylist():
        if token is not None and not token.startswith(current):
            if token not in opened:
                opened[token] = cipher.encrypt(
                    cipher.decrypt(token, context), context, deterministic=True
                )
            token = opened[token]
        out.append(token)
    return pa.array(out, pa.string())
