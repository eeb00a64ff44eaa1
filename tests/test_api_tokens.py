"""Attacks on the API's tokens and keys: every one is a 401 with a JSON error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import jwt
import pytest
from api_support import World, token_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.server.auth import SECRET_NAME
from botpoly_admin.vault import installation_secret


def secret_of(db_path: Path | str) -> bytes:
    """The token secret the server made, read back (decrypted) from the database."""
    manager = TenantManager(db_path, create=False)
    try:
        return installation_secret(manager.vault, SECRET_NAME, make=_never).encode()
    finally:
        manager.close()


def _never() -> str:
    raise AssertionError("the server made no token secret")


def claims_for(world: World, clock, **overrides) -> dict:
    claims = {"sub": world.john_key.key.key_id, "scope": f"tenant:{world.john.tenant_id}",
              "jti": "x" * 32, "iat": int(clock.time()), "exp": int(clock.time()) + 900}
    return {k: v for k, v in {**claims, **overrides}.items() if v is not None}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_refused(api, world: World, token: str, *words: str) -> None:
    for path in (f"/tenants/{world.john.tenant_id}", "/admin/stats"):
        response = api.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        for word in words:
            assert word in error, error
        assert token not in response.text


def test_a_good_token_passes(api, world: World, db_path: Path, clock) -> None:
    token = jwt.encode(claims_for(world, clock), secret_of(db_path), algorithm="HS256")
    response = api.get(f"/tenants/{world.john.tenant_id}",
                       headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_tokens_carry_sub_scope_and_jti_and_live_15_minutes(api, world: World, db_path: Path,
                                                            clock) -> None:
    issued = api.post("/token", headers={"X-API-Key": world.john_key.api_key}).json()
    assert issued["token_type"] == "bearer" and issued["expires_in"] == 900
    header = jwt.get_unverified_header(issued["access_token"])
    claims = jwt.decode(issued["access_token"], secret_of(db_path), algorithms=["HS256"],
                        options={"verify_exp": False})
    assert header["alg"] == "HS256"
    assert claims["sub"] == world.john_key.key.key_id
    assert claims["scope"] == f"tenant:{world.john.tenant_id}"
    assert claims["exp"] - claims["iat"] == 900 and len(claims["jti"]) >= 16
    admin = jwt.decode(token_for(api, world.admin)["Authorization"][7:], secret_of(db_path),
                       algorithms=["HS256"], options={"verify_exp": False})
    assert admin["scope"] == "admin"
    # Each token is its own (jti), even within one second.
    again = api.post("/token", headers={"X-API-Key": world.john_key.api_key}).json()
    assert again["access_token"] != issued["access_token"]


def test_an_expired_token(api, world: World, clock) -> None:
    headers = token_for(api, world.john_key)
    clock.advance(899)
    assert api.get(f"/tenants/{world.john.tenant_id}", headers=headers).status_code == 200
    clock.advance(1)
    assert_refused(api, world, headers["Authorization"][7:], "expired", "POST /token")


def test_a_forged_token(api, world: World, db_path: Path, clock) -> None:
    forged = jwt.encode(claims_for(world, clock), b"not the server's secret" * 2,
                        algorithm="HS256")
    assert_refused(api, world, forged, "signature")
    # A real token whose payload was edited to reach another tenant.
    real = token_for(api, world.john_key)["Authorization"][7:]
    head, _, sig = real.split(".")
    edited = f"{head}.{b64(claims_for(world, clock, scope='admin'))}.{sig}"
    assert_refused(api, world, edited, "signature")


def test_alg_none(api, world: World, clock) -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(world, clock))}."
    assert_refused(api, world, unsigned, "HS256")
    admin = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(world, clock, sub=world.admin.key.key_id, scope='admin'))}."  # noqa: E501
    assert_refused(api, world, admin)


def test_other_algorithms_and_hs_rs_confusion(api, world: World, db_path: Path, clock) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs256 = jwt.encode(claims_for(world, clock), private, algorithm="RS256")
    assert_refused(api, world, rs256, "HS256")
    assert_refused(api, world, jwt.encode(claims_for(world, clock), secret_of(db_path),
                                          algorithm="HS512"), "HS256")
    # The classic confusion: an HS256 token keyed with a public key (the attacker knows
    # it). The server's secret is not a public key, so it does not verify.
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = b64(claims_for(world, clock))
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, f"{header}.{body}".encode(),
                                                  hashlib.sha256).digest()).rstrip(b"=")
    assert_refused(api, world, f"{header}.{body}.{signature.decode()}", "signature")


@pytest.mark.parametrize("missing", ["sub", "scope", "jti", "exp"])
def test_a_token_without_a_required_claim(api, world: World, db_path: Path, clock,
                                          missing) -> None:
    token = jwt.encode(claims_for(world, clock, **{missing: None}), secret_of(db_path),
                       algorithm="HS256")
    assert_refused(api, world, token, missing)


def test_a_token_whose_scope_is_not_its_keys(api, world: World, db_path: Path, clock) -> None:
    # Signed with the real secret (say it leaked): a tenant key still cannot be admin.
    token = jwt.encode(claims_for(world, clock, scope="admin"), secret_of(db_path),
                       algorithm="HS256")
    assert_refused(api, world, token, "scope")


@pytest.mark.parametrize("garbage", ["", "x", "a.b", "a.b.c", "Bearer", "🙂" * 3,
                                     "eyJhbGciOiJIUzI1NiJ9.e30."])
def test_malformed_tokens(api, world: World, garbage: str) -> None:
    response = api.get(f"/tenants/{world.john.tenant_id}",
                       headers={"Authorization": f"Bearer {garbage}".encode()})
    assert response.status_code == 401, response.text
    assert response.json()["error"]


@pytest.mark.parametrize("key", [
    "", "x", "bpk_", "bpk_0123456789ab", "bpk_0123456789ab_short",
    "bpk_ZZZZZZZZZZZZ_" + "a" * 43, "sk_live_" + "a" * 43, "bpk_0123456789ab_" + "a" * 43,
])
def test_malformed_or_unknown_keys(api, world: World, key: str) -> None:
    for headers in ({"X-API-Key": key}, {"api-key": key}):
        response = api.post("/token", headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"]
    wrong_secret = world.john_key.api_key[:-4] + "AAAA"
    response = api.post("/token", headers={"X-API-Key": wrong_secret})
    assert response.status_code == 401 and "unknown or revoked" in response.json()["error"]
    assert api.post("/token").status_code == 401


def test_revoking_a_key_invalidates_its_tokens_at_once(api, world: World, run_cli) -> None:
    headers = token_for(api, world.john_key)
    admin = {"api-key": world.admin.api_key}
    assert api.get(f"/tenants/{world.john.tenant_id}", headers=headers).status_code == 200
    result = run_cli("api", "keys", "revoke", world.john_key.key.key_id)
    assert result.exit_code == 0, result.output
    assert_refused(api, world, headers["Authorization"][7:], "revoked")
    assert api.post("/token", headers={"X-API-Key": world.john_key.api_key}).status_code == 401
    # Other keys are untouched; a revoked admin key loses its header access too.
    assert api.get("/admin/stats", headers=admin).status_code == 200
    apikeys.revoke_key(world.manager.store, world.admin.key.key_id)
    assert api.get("/admin/stats", headers=admin).status_code == 401


def test_purging_a_tenant_removes_its_keys_and_tokens(api, world: World) -> None:
    headers = token_for(api, world.john_key)
    world.manager.delete_tenant(world.john.tenant_id, purge=True)
    assert_refused(api, world, headers["Authorization"][7:], "no longer exists")
    assert apikeys.list_keys(world.manager.store, include_revoked=True) == [world.admin.key,
                                                                      world.ann_key.key]
