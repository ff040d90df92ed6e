"""The contract's reason codes: why an event was allowed or denied.

Codes may be added (documented, citing the policy), never renamed: consumers of
``privacy.violations`` and ``privacy.audit`` match on them.
"""

from __future__ import annotations

from typing import Final, Literal

ALLOWED: Final = "allowed"
PURPOSE_NOT_PERMITTED: Final = "purpose_not_permitted"
PURPOSE_NOT_DECLARED: Final = "purpose_not_declared"
ROLE_NOT_AUTHORIZED: Final = "role_not_authorized"
CONSENT_WITHDRAWN: Final = "consent_withdrawn"
RECIPIENT_NOT_TRUSTED: Final = "recipient_not_trusted"
PROHIBITED_COLLECTION: Final = "prohibited_collection"
NOT_COLLECTED: Final = "not_collected"
SUBJECT_ERASED: Final = "subject_erased"
RETENTION_EXPIRED: Final = "retention_expired"
SOURCE_UNAUTHENTICATED: Final = "source_unauthenticated"
"""The event does not prove which registered source sent it: no MAC, an unknown or removed
source, a secret version retired or unknown, or a MAC that does not match the record (a copy
relabelled, a MAC moved onto another record). Judged before the policy, by
:mod:`processors.authentication`; cites PROTECTION OF CUSTOMER'S PERSONAL INFORMATION ("employees
are granted access to customers' data only if their job function/position requires them to
have the access"): a role nobody vouches for is not a job function."""
SOURCE_NOT_AUTHORIZED: Final = "source_not_authorized"
"""The source is authenticated, but is not registered to assert the actor's role, or to file
this destructive request (erasure, consent withdrawal, retention sweep, dead-letter redrive).
Same citation as :data:`SOURCE_UNAUTHENTICATED`."""
VALUE_UNREADABLE: Final = "value_unreadable"

REASON_CODES: Final = frozenset(
    {
        ALLOWED,
        PURPOSE_NOT_PERMITTED,
        PURPOSE_NOT_DECLARED,
        ROLE_NOT_AUTHORIZED,
        CONSENT_WITHDRAWN,
        RECIPIENT_NOT_TRUSTED,
        PROHIBITED_COLLECTION,
        NOT_COLLECTED,
        SUBJECT_ERASED,
        RETENTION_EXPIRED,
        SOURCE_UNAUTHENTICATED,
        SOURCE_NOT_AUTHORIZED,
        VALUE_UNREADABLE,
    }
)
ERASURE_REASONS: Final = frozenset({SUBJECT_ERASED, RETENTION_EXPIRED})
"""The reasons a category counts as erased: a request, or its retention running out."""

Decision = Literal["allow", "deny"]
