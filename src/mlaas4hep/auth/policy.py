"""Authorization: WLCG capability scopes, group mapping and resource ownership.

Scopes follow the WLCG Common JWT Profile: ``compute.create``, ``compute.read``,
``compute.cancel``, ``compute.modify`` and ``storage.{read,create,modify}:<path>``. A
storage scope grants its path and everything below it, by whole path components:
``storage.read:/foo/bar`` allows ``/foo/bar/x`` but not ``/foo/bargain``. A token that
carries capability scopes is judged by them alone (deny by default); a token without any
is judged by its ``wlcg.groups``, mapped to scopes by configuration.

What each action needs (routes call :func:`require_scope` with these):

==============================  ==========================================
submit a job                    ``compute.create``
read own jobs, logs, artifacts  ``compute.read``
cancel a job                    ``compute.cancel``
modify a job                    ``compute.modify``
read input data at path P       ``storage.read:P``
upload model NAME               ``storage.create:/models/NAME``
replace or delete model NAME    ``storage.modify:/models/NAME``
inference on model NAME         ``storage.read:/models/NAME`` or ``mlaas.infer``
==============================  ==========================================

Ownership: a resource belongs to ``Principal.key`` (``iss#sub``). The admin group sees
everything; others see their own resources, models shared with one of their groups, and
public models.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PermissionDenied

CAPABILITY_PREFIXES = ("compute.", "storage.")
INFERENCE_SCOPE = "mlaas.infer"
# Reading /metrics: its labels name every model, so it is not for every user.
METRICS_SCOPE = "mlaas.metrics"
# WLCG profile: storage.modify includes creating new data.
_IMPLIED_BY = {"storage.create": ("storage.create", "storage.modify")}


def model_scope(action: str, model: str) -> str:
    """The storage scope for ``action`` (read/create/modify) on model ``model``."""
    return f"storage.{action}:/models/{model}"


SERVICE_SCOPES = frozenset({INFERENCE_SCOPE, METRICS_SCOPE})


def is_capability(scope: str, extra: frozenset[str] = SERVICE_SCOPES) -> bool:
    """True for WLCG capability scopes (and configured service scopes), not ``openid`` etc."""
    return scope.startswith(CAPABILITY_PREFIXES) or scope in extra


def effective_scopes(
    token_scopes: Iterable[str],
    groups: Iterable[str],
    mapping: Mapping[str, frozenset[str]],
    extra: frozenset[str] = SERVICE_SCOPES,
) -> frozenset[str]:
    """The capability scopes a caller holds.

    The token's capability scopes if it has any; otherwise the union of what ``mapping``
    grants to each of its groups (unknown groups grant nothing).
    """
    caps = frozenset(s for s in token_scopes if is_capability(s, extra))
    if caps:
        return caps
    granted: set[str] = set()
    for group in groups:
        granted |= mapping.get(group, frozenset())
    return frozenset(granted)


def has_scope(principal: Principal, needed: str) -> bool:
    """Whether ``principal`` holds ``needed`` (e.g. ``storage.read:/store/user/a/x.root``).

    Scopes with a path match by path components; a needed path containing ``..`` is
    never granted (callers pass the normalised path they will actually use). Admins are
    held to their scopes too; the admin group widens visibility, not capabilities.
    """
    name, _, path = needed.partition(":")
    accepted = _IMPLIED_BY.get(name, (name,))
    for granted in principal.scopes:
        g_name, g_sep, g_path = granted.partition(":")
        if g_name not in accepted:
            continue
        if not path and not g_sep:
            return True
        if path and g_sep and _path_within(path, g_path):
            return True
    return False


def require_scope(principal: Principal, needed: str) -> None:
    """Raise ``PermissionDenied`` naming ``needed`` unless ``principal`` holds it."""
    if not has_scope(principal, needed):
        msg = f"missing scope {needed!r}; ask your token issuer for a token that grants it"
        raise PermissionDenied(msg)


def require_any_scope(principal: Principal, *needed: str) -> None:
    """Raise ``PermissionDenied`` unless ``principal`` holds one of ``needed``."""
    if not any(has_scope(principal, n) for n in needed):
        wanted = " or ".join(repr(n) for n in needed)
        msg = f"missing scope {wanted}; ask your token issuer for a token that grants it"
        raise PermissionDenied(msg)


def _path_within(path: str, prefix: str) -> bool:
    if not path.startswith("/") or not prefix.startswith("/"):
        return False
    if ".." in path.split("/"):
        return False
    path = posixpath.normpath(path)
    prefix = posixpath.normpath(prefix)
    # normpath keeps a leading '//' (POSIX); neither form is a prefix trick.
    path, prefix = "/" + path.lstrip("/"), "/" + prefix.lstrip("/")
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def in_group(principal: Principal, group: str) -> bool:
    """Membership by WLCG group path: ``/cms/higgs`` is a member of ``/cms``."""
    return any(g == group or g.startswith(group.rstrip("/") + "/") for g in principal.groups)


def can_access(
    principal: Principal,
    owner_key: str,
    *,
    shared_groups: frozenset[str] = frozenset(),
    public: bool = False,
) -> bool:
    """Whether ``principal`` may see a resource owned by ``owner_key``.

    True for the owner, the admin group, members of a group the resource is shared with,
    and anyone when ``public``. Write actions should use :func:`can_modify`.
    """
    if public or principal.is_admin or principal.key == owner_key:
        return True
    return any(in_group(principal, g) for g in shared_groups)


def can_modify(principal: Principal, owner_key: str) -> bool:
    """Only the owner (or an admin) replaces, deletes or cancels a resource."""
    return principal.is_admin or principal.key == owner_key


def sees_all(principal: Principal) -> bool:
    """Whether listings should skip the owner filter (admin group)."""
    return principal.is_admin
