"""What the contract fixes in every version of the policy: names that may be added to, never
renamed, and limits that may be tightened, never relaxed."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Every version must keep these names and limits (the contract, see docs/).
CONTRACT_CATEGORIES = frozenset(
    {"name", "address", "date_of_birth", "telephone", "fax", "email", "banking"}
    | {"service_account", "web_log", "credit_card", "documents"}
)


CONTRACT_PURPOSES = frozenset(
    {"service_provision", "customer_support", "website_administration", "billing"}
    | {"account_notices", "transaction_processing", "personalization", "website_improvement"}
    | {"correspondence_followup", "service_information", "contests_promotions_surveys"}
    | {"legal_compliance"}
)


CONTRACT_CONSENT_PURPOSES = frozenset(
    {"service_information", "personalization", "contests_promotions_surveys"}
)


CONTRACT_PROHIBITED_PURPOSES = frozenset({"sale", "trade"})


CONTRACT_ROLES = frozenset(
    {"billing_clerk", "customer_service", "field_technician", "web_admin", "marketing"}
    | {"privacy_officer", "system"}
)


CONTRACT_CHANNELS = frozenset(
    {"paper_form", "web_form", "in_person", "telephone", "email", "website", "online_tendering"}
)


CONTRACT_RECIPIENTS = frozenset({"first_atlantic_commerce", "authorities"})


CONTRACT_FORBIDDEN_GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        role: frozenset({"banking", "credit_card", "date_of_birth"})
        for role in ("web_admin", "field_technician", "marketing")
    }
)


CONTRACT_REQUIRED_GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {"billing_clerk": frozenset({"banking", "service_account"})}
)


CONTRACT_PROHIBITED_COLLECTIONS = frozenset({("online_tendering", "credit_card")})
