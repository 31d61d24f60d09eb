"""Authentication and authorization: who is calling, and what may they do.

Framework-free (the FastAPI glue is ``mlaas4hep.api.deps``). One validation path for
every issuer::

    settings.py      AuthSettings / IssuerSettings: trusted issuers, audiences, group
                     mapping, admin group, proxy CIDRs, limits
    factory.py       create_authenticator(): settings -> Authenticator (+ LocalIssuer)
    tokens.py        Authenticator: Authorization header -> verified Principal
    jwks.py          IssuerKeys: OIDC discovery + JWKS cache, rate-limited kid refresh
    proxy.py         TrustedProxies: X-Forwarded-* only from configured peers
    policy.py        WLCG capability scopes, group mapping, ownership/visibility
    principal.py     Principal: (iss, sub), scopes, groups, admin flag
    local_issuer.py  the embedded issuer for loopback/demo use (key 0600 in data_dir)
    device_flow.py   RFC 8628 device flow for ``mlaas4hep login``
    token_store.py   the CLI's token file (0600)

Errors: ``AuthError`` (-> 401) with a short client-safe reason, ``PermissionDenied``
(-> 403) naming the scope needed; ``IssuerUnavailable`` (no URL in its message) when an
issuer cannot be reached (-> 503 + Retry-After). See docs/security.md for the threat model.
"""
