from __future__ import annotations

import pytest

from mlaas4hep.auth.settings import AuthSettings, IssuerSettings
from mlaas4hep.errors import SpecError


def test_from_mapping() -> None:
    s = AuthSettings.from_mapping(
        {
            "admin_group": "/ops",
            "issuers": [
                {
                    "issuer": "https://cms-auth.web.cern.ch/",
                    "audience": ["https://mlaas", "mlaas"],
                    "groups": {"/cms": ["compute.read"]},
                }
            ],
            "trusted_proxies": ["10.0.0.0/8"],
            "data_dir": "~/x",
        }
    )
    (iss,) = s.issuers
    assert iss.audience == ("https://mlaas", "mlaas")
    assert iss.groups == {"/cms": frozenset({"compute.read"})}
    assert iss.metadata_url == "https://cms-auth.web.cern.ch/.well-known/openid-configuration"
    assert s.admin_group == "/ops"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"isuers": []}, "unknown auth settings"),
        ({"issuers": [{"issuer": "https://x"}]}, "'issuer' and 'audience'"),
        ({"issuers": [{"issuer": "http://iam.example.org", "audience": "a"}]}, "https://"),
        ({"trusted_proxies": ["everyone"]}, "not an IP network"),
        ({"leeway_s": 3600}, "out of range"),
        ({"max_token_bytes": 10}, "too small"),
    ],
)
def test_bad_settings_are_explained(raw: dict[str, object], reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        AuthSettings.from_mapping(raw)


def test_duplicate_issuers_rejected() -> None:
    i = IssuerSettings(issuer="https://a", audience=("x",))
    with pytest.raises(SpecError, match="twice"):
        AuthSettings(issuers=(i, i))


def test_http_issuer_allowed_on_loopback_only() -> None:
    IssuerSettings(issuer="http://127.0.0.1:8080", audience=("x",))
    with pytest.raises(SpecError, match="https"):
        IssuerSettings(issuer="http://10.0.0.1:8080", audience=("x",))
