"""Server-side sessions kept in the database.

Flask's default signed-cookie session cannot be revoked: a copied cookie keeps working after
sign-out. Here the cookie carries only a random id (256 bits), the database keeps its SHA-256
and the data, and signing out deletes the row, so a replayed cookie finds nothing. Idle and
absolute lifetimes are enforced on every request; sign-in asks for a fresh id.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Request, Response, g
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.orm import joinedload
from werkzeug.datastructures import CallbackDict

from portal.core.db import get_database, get_session, utcnow
from portal.features.identity.models import Membership, User, WebSession

LAST_SEEN_RESOLUTION = timedelta(seconds=60)
# the session and, when a customer user is signed in, that person with every account they
# belong to: one round trip for what every page needs
SESSION_BY_ID = (
    select(WebSession, User)
    .outerjoin(User, and_(User.id == WebSession.user_id, User.active.is_(True)))
    .options(joinedload(User.memberships).joinedload(Membership.customer))
    .where(WebSession.id_hash == bindparam("id_hash"))
)
PRELOADED_USER = "_portal_preloaded_user"


def hash_session_id(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class ServerSession(CallbackDict[str, Any], SessionMixin):
    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        sid: str | None = None,
        created_at: datetime | None = None,
        last_seen_at: datetime | None = None,
        expired: bool = False,
    ) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.created_at = created_at
        self.last_seen_at = last_seen_at
        self.expired = expired
        self.modified = False
        self.rotate_requested = False
        self.end_requested = False

    def rotate(self) -> None:
        """Give this session a new id at the end of the request (call at sign-in)."""
        self.rotate_requested = True
        self.modified = True

    def end(self) -> None:
        """Delete this session at the end of the request (call at sign-out).

        Whatever is stored after this (a flash message, the chosen language) travels on in a
        new anonymous session under a new id; the old id is dead either way.
        """
        self.clear()
        self.end_requested = True
        self.modified = False


class DatabaseSessionInterface(SessionInterface):
    def __init__(self, idle: timedelta, absolute: timedelta) -> None:
        self.idle = idle
        self.absolute = absolute

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if not sid or len(sid) > 128 or _is_static(app, request):
            return ServerSession()
        # the request's own session: one connection per request, not two
        db_session = get_session()
        id_hash = hash_session_id(sid)
        row = db_session.execute(SESSION_BY_ID, {"id_hash": id_hash}).unique().first()
        if row is None:
            return ServerSession(expired=True)
        stored, user = row
        now = utcnow()
        if now - stored.last_seen_at > self.idle or now - stored.created_at > self.absolute:
            db_session.execute(delete(WebSession).where(WebSession.id_hash == id_hash))
            db_session.commit()
            return ServerSession(expired=True)
        # handed to the user loader, which still checks the partner (see portal.web.access)
        g.setdefault(PRELOADED_USER, user)
        return ServerSession(dict(stored.data), sid, stored.created_at, stored.last_seen_at)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        if session.end_requested:
            if session.sid:
                self._delete(app, session.sid)
                session.sid = None
            if not session:
                response.delete_cookie(
                    name,
                    domain=domain,
                    path=path,
                    secure=self.get_cookie_secure(app),
                    httponly=True,
                    samesite=self.get_cookie_samesite(app),
                )
                return
        if session.sid is None and not session:
            return  # nothing worth keeping: no row, no cookie
        response.vary.add("Cookie")
        now = utcnow()
        if session.sid is None or session.rotate_requested:
            if session.sid:
                self._delete(app, session.sid)
            session.sid = secrets.token_urlsafe(32)
            self._insert(app, session, now)
            self._set_cookie(app, response, session.sid)
        elif session.modified:
            self._write(app, session.sid, dict(session), now)
        elif session.last_seen_at is None or now - session.last_seen_at > LAST_SEEN_RESOLUTION:
            self._touch(app, session.sid, now)

    def _set_cookie(self, app: Flask, response: Response, sid: str) -> None:
        response.set_cookie(
            self.get_cookie_name(app),
            sid,
            max_age=int(self.absolute.total_seconds()),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            httponly=True,
            samesite=self.get_cookie_samesite(app),
        )

    def _insert(self, app: Flask, session: ServerSession, now: datetime) -> None:
        from flask import request

        data = dict(session)
        with get_database(app).sessions() as db_session:
            db_session.add(
                WebSession(
                    id_hash=hash_session_id(session.sid or ""),
                    data=data,
                    principal=_principal(data),
                    user_id=_user_id(data),
                    user_agent=(request.user_agent.string or "")[:300],
                    ip=request.remote_addr,
                    created_at=now,
                    last_seen_at=now,
                )
            )
            db_session.commit()

    def _write(self, app: Flask, sid: str, data: dict[str, Any], now: datetime) -> None:
        with get_database(app).sessions() as db_session:
            db_session.execute(
                update(WebSession)
                .where(WebSession.id_hash == hash_session_id(sid))
                .values(
                    data=data, principal=_principal(data), user_id=_user_id(data), last_seen_at=now
                )
            )
            db_session.commit()

    def _touch(self, app: Flask, sid: str, now: datetime) -> None:
        with get_database(app).sessions() as db_session:
            db_session.execute(
                update(WebSession)
                .where(WebSession.id_hash == hash_session_id(sid))
                .values(last_seen_at=now)
            )
            db_session.commit()

    def _delete(self, app: Flask, sid: str) -> None:
        with get_database(app).sessions() as db_session:
            db_session.execute(delete(WebSession).where(WebSession.id_hash == hash_session_id(sid)))
            db_session.commit()


def _is_static(app: Flask, request: Request) -> bool:
    """Assets need no session (and should cost no database round trip)."""
    return bool(app.static_url_path) and request.path.startswith(f"{app.static_url_path}/")


def _user_id(data: dict[str, Any]) -> int | None:
    kind, _, raw_id = str(data.get("_user_id") or "").partition(":")
    return int(raw_id) if kind == "user" and raw_id.isdigit() else None


def _principal(data: dict[str, Any]) -> str | None:
    user_id = data.get("_user_id")
    return str(user_id) if user_id else None


def end_sessions_of(app: Flask, principal: str, keep_sid: str | None = None) -> int:
    """Sign a person out everywhere (after a password change), optionally keeping one session."""
    statement = delete(WebSession).where(WebSession.principal == principal)
    if keep_sid:
        statement = statement.where(WebSession.id_hash != hash_session_id(keep_sid))
    with get_database(app).sessions() as db_session:
        count = db_session.execute(statement).rowcount  # type: ignore[attr-defined]
        db_session.commit()
    return int(count or 0)


def sessions_of(app: Flask, principal: str) -> list[WebSession]:
    with get_database(app).sessions() as db_session:
        return list(
            db_session.scalars(
                select(WebSession)
                .where(WebSession.principal == principal)
                .order_by(WebSession.last_seen_at.desc())
            )
        )


def purge_expired(app: Flask, idle: timedelta, absolute: timedelta) -> int:
    now = utcnow()
    with get_database(app).sessions() as db_session:
        count = db_session.execute(
            delete(WebSession).where(
                (WebSession.last_seen_at < now - idle) | (WebSession.created_at < now - absolute)
            )
        ).rowcount  # type: ignore[attr-defined]
        db_session.commit()
    return int(count or 0)
