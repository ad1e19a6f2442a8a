"""Accounts and API tokens: ``/api/users`` (administrators) and ``/api/me`` (everyone)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from vesalius.auth.accounts import Auth, LoginRefused
from vesalius.auth.passwords import PasswordPolicyError
from vesalius.auth.permissions import DEFAULT_ROLE, Role
from vesalius.errors import Conflict, NotFound
from vesalius.index.people import TokenRecord, UserRecord
from vesalius.web.guard import actor_of

router = APIRouter(prefix="/api", tags=["users"])
T = TypeVar("T")


class UserIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    role: Role = Field(
        default=DEFAULT_ROLE, description="The account's role; the least privileged by default."
    )
    full_name: str | None = Field(default=None, max_length=128)


class UserPatch(BaseModel):
    role: Role | None = None
    active: bool | None = None
    password: str | None = Field(default=None, max_length=256)


class TokenIn(BaseModel):
    name: str = Field(default="token", max_length=128)


class PasswordChange(BaseModel):
    current: str = Field(max_length=256)
    new: str = Field(max_length=256)


def auth_of(request: Request) -> Auth:
    auth: Auth = request.app.state.container.auth
    return auth


@contextmanager
def errors() -> Iterator[None]:
    """Service errors as HTTP answers whose detail says what to change."""
    try:
        yield
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except LoginRefused as exc:
        raise HTTPException(403, str(exc)) from None
    except (PasswordPolicyError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None


def call(work: Callable[[], T]) -> T:
    with errors():
        return work()


def user_json(user: UserRecord) -> dict[str, Any]:
    data = asdict(user)
    data.pop("id")
    data["permissions"] = sorted(Role(user.role).permissions) if user.role in set(Role) else []
    return data


def token_json(token: TokenRecord) -> dict[str, Any]:
    data = asdict(token)
    data.pop("user_pk")
    return data


@router.get("/users", summary="Every account")
def list_users(request: Request) -> list[dict[str, Any]]:
    return [user_json(u) for u in auth_of(request).users()]


@router.post("/users", summary="Create an account", status_code=201)
def create_user(request: Request, body: UserIn) -> dict[str, Any]:
    auth = auth_of(request)
    return user_json(
        call(lambda: auth.create_user(body.username, body.password, body.role, body.full_name))
    )


@router.patch("/users/{username}", summary="Change an account's role, state or password")
def update_user(request: Request, username: str, body: UserPatch) -> dict[str, Any]:
    auth = auth_of(request)
    with errors():
        if body.role is not None:
            auth.set_role(username, body.role)
        if body.active is not None:
            auth.set_active(username, body.active)
        if body.password is not None:
            auth.set_password(username, body.password)
        return user_json(auth.user(username))


@router.get("/users/{username}/tokens", summary="An account's API tokens")
def user_tokens(request: Request, username: str) -> list[dict[str, Any]]:
    return [token_json(t) for t in auth_of(request).tokens_of(username)]


@router.post("/users/{username}/tokens", summary="Create an API token", status_code=201)
def create_user_token(request: Request, username: str, body: TokenIn) -> dict[str, Any]:
    auth = auth_of(request)
    secret, token = call(lambda: auth.create_token(username, body.name))
    return {**token_json(token), "token": secret}


@router.delete("/users/{username}/tokens/{token_id}", summary="Revoke an API token")
def revoke_user_token(request: Request, username: str, token_id: int) -> Response:
    auth = auth_of(request)
    call(lambda: auth.revoke_token(token_id, username))
    return Response(status_code=204)


@router.get("/me", summary="The logged-in account and its permissions")
def me(request: Request) -> dict[str, Any]:
    return user_json(actor_of(request).user)


@router.post("/me/password", summary="Change one's own password", status_code=204)
def change_password(request: Request, body: PasswordChange) -> Response:
    auth, user = auth_of(request), actor_of(request).user
    call(lambda: auth.change_own_password(user.username, body.current, body.new))
    return Response(status_code=204)


@router.get("/me/tokens", summary="One's own API tokens")
def my_tokens(request: Request) -> list[dict[str, Any]]:
    return user_tokens(request, actor_of(request).user.username)


@router.post("/me/tokens", summary="Create an API token for oneself", status_code=201)
def create_my_token(request: Request, body: TokenIn) -> dict[str, Any]:
    return create_user_token(request, actor_of(request).user.username, body)


@router.delete("/me/tokens/{token_id}", summary="Revoke one of one's own API tokens")
def revoke_my_token(request: Request, token_id: int) -> Response:
    return revoke_user_token(request, actor_of(request).user.username, token_id)
