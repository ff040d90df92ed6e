"""The customer-data privacy policy as code: versioned YAML files, loaded and validated once.

* :mod:`processors.policy.model`: one version as values, every rule citing its sentence;
* :mod:`processors.policy.book`: every version, and which was in force when;
* :mod:`processors.policy.loader`: the policy directory's files, read into a book;
* :mod:`processors.policy.reader`: one file's document checked and read into a version;
* :mod:`processors.policy.contract`: what every version must keep.

The names most callers need are here; the model's other value types are in
:mod:`processors.policy.model`.
"""

from __future__ import annotations

from processors.policy.book import PolicyBook
from processors.policy.loader import load_policies, load_policy_file
from processors.policy.model import Citation, Duration, LegalHold, Policy, Vocabulary

__all__ = [
    "Citation",
    "Duration",
    "LegalHold",
    "Policy",
    "PolicyBook",
    "Vocabulary",
    "load_policies",
    "load_policy_file",
]
