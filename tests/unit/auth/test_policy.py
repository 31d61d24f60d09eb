from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlaas4hep.auth.policy import (
    can_access,
    can_modify,
    effective_scopes,
    has_scope,
    in_group,
    model_scope,
    require_any_scope,
    require_scope,
)
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PermissionDenied


def who(
    *scopes: str, groups: tuple[str, ...] = (), sub: str = "a", admin: bool = False
) -> Principal:
    return Principal(
        issuer="https://iss",
        subject=sub,
        scopes=frozenset(scopes),
        groups=frozenset(groups),
        is_admin=admin,
    )


@pytest.mark.parametrize(
    ("granted", "needed", "ok"),
    [
        ("storage.read:/foo/bar", "storage.read:/foo/bar", True),
        ("storage.read:/foo/bar", "storage.read:/foo/bar/x", True),
        ("storage.read:/foo/bar/", "storage.read:/foo/bar/x/y.root", True),
        ("storage.read:/foo/bar", "storage.read:/foo/bargain", False),
        ("storage.read:/foo/bar", "storage.read:/foo", False),
        ("storage.read:/foo/bar", "storage.read:/foo/bar/../../etc", False),
        ("storage.read:/foo/bar", "storage.read:/foo//bar/x", True),
        ("storage.read:/", "storage.read:/anything/at/all", True),
        ("storage.read:/foo", "storage.create:/foo", False),
        ("storage.modify:/models", "storage.create:/models/m1", True),  # modify implies create
        ("storage.create:/models", "storage.modify:/models/m1", False),
        ("storage.read", "storage.read:/foo", False),  # no path granted, none implied
        ("compute.read", "compute.read", True),
        ("compute.read", "compute.create", False),
        ("compute.read", "compute.readx", False),
        ("storage.read:foo", "storage.read:foo/x", False),  # relative paths never match
    ],
)
def test_scope_matching_by_path_component(granted: str, needed: str, ok: bool) -> None:
    assert has_scope(who(granted), needed) is ok


segment = st.text(alphabet="abcxyz", min_size=1, max_size=4)


@given(st.lists(segment, min_size=1, max_size=4), st.lists(segment, min_size=0, max_size=3))
def test_prefix_grants_everything_below_it(prefix: list[str], rest: list[str]) -> None:
    granted = "/" + "/".join(prefix)
    assert has_scope(who(f"storage.read:{granted}"), f"storage.read:{granted}/{'/'.join(rest)}")


@given(st.lists(segment, min_size=1, max_size=4), segment)
def test_sibling_with_common_string_prefix_is_denied(prefix: list[str], suffix: str) -> None:
    granted = "/" + "/".join(prefix)
    assert not has_scope(who(f"storage.read:{granted}"), f"storage.read:{granted}{suffix}")


def test_admin_is_held_to_scopes() -> None:
    assert not has_scope(who(admin=True), "compute.create")


def test_require_scope_names_the_missing_scope() -> None:
    with pytest.raises(PermissionDenied, match=r"'compute\.cancel'"):
        require_scope(who("compute.read"), "compute.cancel")
    require_scope(who("compute.cancel"), "compute.cancel")


def test_require_any_scope_for_inference() -> None:
    require_any_scope(who("mlaas.infer"), model_scope("read", "m"), "mlaas.infer")
    require_any_scope(who("storage.read:/models/m"), model_scope("read", "m"), "mlaas.infer")
    with pytest.raises(PermissionDenied, match=r"storage\.read:/models/m'"):
        require_any_scope(who("storage.read:/models/m2"), model_scope("read", "m"), "mlaas.infer")


def test_capability_scopes_win_over_groups() -> None:
    mapping = {"/cms": frozenset({"compute.create"})}
    got = effective_scopes(["openid", "compute.read"], ["/cms"], mapping)
    assert got == frozenset({"compute.read"})


def test_groups_apply_only_without_capability_scopes() -> None:
    mapping = {"/cms": frozenset({"compute.read"}), "/cms/mlaas": frozenset({"compute.create"})}
    got = effective_scopes(["openid", "profile"], ["/cms", "/cms/mlaas", "/atlas"], mapping)
    assert got == frozenset({"compute.read", "compute.create"})
    assert effective_scopes([], ["/unknown"], mapping) == frozenset()


def test_ownership_and_sharing() -> None:
    alice, bob = who(sub="alice", groups=("/cms", "/cms/higgs")), who(sub="bob", groups=("/atlas",))
    assert can_access(alice, alice.key)
    assert not can_access(bob, alice.key)
    assert can_access(bob, alice.key, public=True)
    assert can_access(alice, bob.key, shared_groups=frozenset({"/cms"}))
    assert not can_access(bob, alice.key, shared_groups=frozenset({"/cms"}))
    assert can_access(who(sub="root", admin=True), alice.key)
    assert can_modify(alice, alice.key)
    assert not can_modify(alice, bob.key)


def test_owner_key_includes_the_issuer() -> None:
    same_sub_other_issuer = Principal(issuer="https://other", subject="alice")
    assert not can_access(same_sub_other_issuer, who(sub="alice").key)


def test_group_membership_is_by_path_component() -> None:
    p = who(groups=("/cms/higgs",))
    assert in_group(p, "/cms")
    assert not in_group(who(groups=("/cmsx",)), "/cms")
