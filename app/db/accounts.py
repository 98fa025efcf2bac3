"""Users and API keys: who may write (labels, lists, shares).

    user = add_user(session, "ada", "correct horse battery")
    key, secret = create_key(session, user, "laptop")   # the secret is shown once, never stored
    user_for_key(session, secret)                        # -> user, or None when unknown/revoked

Passwords are stored as scrypt hashes with a per-user salt. A key is 256 random bits, so a plain
SHA-256 of it is enough to look it up and nothing an attacker could brute-force; its first
characters are kept to name it in listings and on revocation.
"""

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError
from app.db.models import ApiKey, SignIn, SignInLink, User

KEY_PREFIX = "msk_"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(found.hex(), digest)


@cache
def _unknown_user_hash() -> str:
    """What a sign-in as nobody is checked against, so it costs one scrypt, as a real one does."""
    return hash_password(secrets.token_urlsafe(16))


def _check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise MonoscopeError(f"a password has at least {MIN_PASSWORD} characters")


def add_user(session: Session, name: str, password: str) -> User:
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise MonoscopeError("a user name is 1 to 100 printable characters")
    _check_new_password(password)
    if find_user(session, name) is not None:
        raise MonoscopeError(f"user {name!r} already exists")
    user = User(name=name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def set_password(session: Session, name: str, password: str) -> User:
    """A new password; every browser signed in as the user is signed out."""
    user = find_user(session, name)
    if user is None:
        raise MonoscopeError(f"no user {name!r}; add one with `monoscope user add`")
    _check_new_password(password)
    user.password_hash = hash_password(password)
    session.execute(delete(SignIn).where(SignIn.user_id == user.id))
    session.flush()
    return user


def sign_in(session: Session, name: str, password: str) -> User | None:
    """The user when the password matches; None otherwise, after the same work (one scrypt),
    so the time taken does not tell whether the name exists."""
    user = find_user(session, name)
    ok = check_password(password, user.password_hash if user else _unknown_user_hash())
    return user if user is not None and ok else None


def open_sign_in(session: Session, user: User) -> str:
    """A new signed-in session for `user`: the token its cookie carries (only a hash is kept)."""
    token = secrets.token_urlsafe(32)
    session.add(SignIn(token_hash=_key_hash(token), user_id=user.id))
    session.flush()
    return token


def user_for_sign_in(session: Session, token: str) -> User | None:
    """The user a session token belongs to, or None once it is closed or was never opened."""
    return session.scalar(
        select(User)
        .join(SignIn, SignIn.user_id == User.id)
        .where(SignIn.token_hash == _key_hash(token))
    )


def close_sign_in(session: Session, token: str) -> None:
    session.execute(delete(SignIn).where(SignIn.token_hash == _key_hash(token)))


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, user: User, name: str) -> tuple[ApiKey, str]:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=secret[:12], key_hash=_key_hash(secret), user_id=user.id)
    session.add(key)
    session.flush()
    return key, secret


def user_for_key(session: Session, secret: str) -> tuple[User, ApiKey] | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == _key_hash(secret)))
    if key is None or key.revoked_at is not None:
        return None
    user = session.get(User, key.user_id)
    return (user, key) if user is not None else None


def revoke_key(session: Session, prefix: str) -> ApiKey:
    keys = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).all()
    if not keys:
        raise MonoscopeError(f"no active key starts with {prefix!r} (see `monoscope key list`)")
    for key in keys:
        key.revoked_at = datetime.now(UTC)
    session.flush()
    return keys[0]


def list_keys(session: Session) -> list[tuple[ApiKey, str]]:
    rows = session.execute(
        select(ApiKey, User.name).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id)
    )
    return [(key, name) for key, name in rows]


def ensure_user(session: Session, name: str) -> User:
    """The user `name`, made with a random password nobody knows when missing (an account that
    signs in only through links)."""
    return find_user(session, name) or add_user(session, name, secrets.token_urlsafe(24))


def create_sign_in_link(session: Session, user: User, valid_for: timedelta) -> str:
    """A token that signs `user` in once within `valid_for`; only its hash is kept."""
    token = secrets.token_urlsafe(32)
    session.add(
        SignInLink(
            token_hash=_key_hash(token), user_id=user.id, expires_at=datetime.now(UTC) + valid_for
        )
    )
    session.flush()
    return token


def use_sign_in_link(session: Session, token: str) -> User | None:
    """The link's user, once: the link is spent in the same statement that checks it, so two
    clicks at once cannot both sign in."""
    now = datetime.now(UTC)
    user_id = session.scalar(
        update(SignInLink)
        .where(
            SignInLink.token_hash == _key_hash(token),
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > now,
        )
        .values(used_at=now)
        .returning(SignInLink.user_id)
    )
    return session.get(User, user_id) if user_id is not None else None
