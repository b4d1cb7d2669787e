"""Logins for a shared page: a password file of bcrypt hashes, and a gate in
front of every route of the Gradio server.

The file has one ``user:hash`` line a user, as ``htpasswd -B`` writes it (so
either tool can keep it); ``#`` starts a comment. Only bcrypt hashes are
accepted: a plain-text, MD5 or SHA line is refused rather than read.

Gradio's own ``launch(auth=...)`` guards most routes but leaves some open
(its heartbeat, stream and cancel routes, and the login page embeds the API
description), so :class:`LoginRequired` refuses every request without a valid
session except the few that draw the login page itself: closed unless named,
so a route added by a later Gradio is closed too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import bcrypt

logger = logging.getLogger(__name__)

ENV_AUTH_FILE = "QA_AUTH_FILE"
ENV_READ_ONLY = "QA_READ_ONLY"
ROUNDS = 12  # bcrypt's default cost: about a quarter of a second a check
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; longer ones are refused, not cut
_USER = re.compile(r"^[^\s:#][^\s:]*$")
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


class AuthError(Exception):
    """A missing or malformed password file, or a bad user name or password."""


@dataclass(frozen=True)
class Users:
    """The users of one password file and their bcrypt hashes."""

    path: Path
    hashes: tuple[tuple[str, bytes], ...]

    def check(self, user: str, password: str) -> bool:
        stored = dict(self.hashes).get(user)
        raw = password.encode("utf-8")
        if stored is None or len(raw) > MAX_PASSWORD_BYTES:
            # The same work for an unknown user, so timing does not tell who exists.
            bcrypt.checkpw(b"x", _DUMMY)
            return False
        return bcrypt.checkpw(raw, stored)

    def __contains__(self, user: str) -> bool:
        return any(name == user for name, _ in self.hashes)


_DUMMY = bcrypt.hashpw(b"x", bcrypt.gensalt(ROUNDS))


def _parse(path: Path, text: str) -> list[tuple[str, bytes]]:
    users = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not _USER.match(user):
            raise AuthError(f"{path} line {number}: expected USER:HASH")
        if not _BCRYPT.match(hashed):
            raise AuthError(
                f"{path} line {number}: the password of {user!r} is not a bcrypt hash "
                f"(write it with: qa passwd {path} {user}, or htpasswd -B)"
            )
        users.append((user, hashed.encode("ascii")))
    return users


def read_users(path: str | os.PathLike) -> Users:
    """The users in ``path``; a missing, unreadable, malformed or empty file is an :class:`AuthError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuthError(f"no auth file at {path} (create it with: qa passwd {path} USER)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"cannot read auth file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    users = _parse(path, text)
    if not users:
        raise AuthError(f"auth file {path} has no users (add one with: qa passwd {path} USER)")
    return Users(path, tuple(users))


def set_password(path: str | os.PathLike, user: str, password: str, *, rounds: int = ROUNDS) -> bool:
    """Add ``user`` to the file or change their password; True when the user is new.

    The file is written beside and moved into place, readable by its owner only.
    """
    path = Path(path)
    if not _USER.match(user or ""):
        raise AuthError(f"{user!r} is not a valid user name (no spaces or ':')")
    raw = password.encode("utf-8")
    if not raw:
        raise AuthError("the password is empty")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise AuthError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes, which bcrypt cannot check")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    _parse(path, "\n".join(lines))  # never rewrite a file we cannot read
    entry = f"{user}:{bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode('ascii')}"
    new = True
    for i, line in enumerate(lines):
        if line.strip().partition(":")[0] == user:
            lines[i], new = entry, False
    if new:
        lines.append(entry)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return new


class Logins:
    """Checks logins against a password file, read again when it changes (so
    ``qa passwd`` takes effect without a restart). A file that has become
    malformed lets nobody in until it is fixed."""

    def __init__(self, users: Users):
        self._users: Users | None = users
        self._path = users.path
        self._stamp = self._stat(users.path)
        self._lock = threading.Lock()

    @staticmethod
    def _stat(path: Path):
        try:
            st = path.stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def users(self) -> Users | None:
        with self._lock:
            stamp = self._stat(self._path)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._users = read_users(self._path)
                except AuthError:
                    logger.exception("the auth file changed and cannot be read: nobody can log in")
                    self._users = None
            return self._users

    def check(self, user: str, password: str) -> bool:
        users = self.users()
        return users is not None and users.check(user, password)

    def allowed(self, user: str | None) -> bool:
        users = self.users()
        return user is not None and users is not None and user in users

    async def login(self, user: str, password: str) -> bool:
        # Gradio calls this inside its event loop; bcrypt's quarter second runs in a thread.
        import anyio

        return await anyio.to_thread.run_sync(self.check, user, password)

# What the login page itself loads: Gradio's own bundled front end, no user data.
_OPEN_PREFIXES = ("/assets/", "/svelte/", "/static/")
# startup-events is what launch() itself calls to start the queue (idempotent, returns only true).
_OPEN_PATHS = {"/gradio_api/startup-events", "/favicon.ico", "/theme.css", "/gradio_api/theme.css", "/robots.txt", "/manifest.json", "/pwa_icon"}


class LoginRequired:
    """ASGI middleware: a request without a live session of a current user gets 401,
    except the login page (``/``), the login form's POST and the front end's files.
    With ``read_only``, Gradio's upload route refuses everyone (403)."""

    def __init__(self, app, logins: Logins | None = None, read_only: bool = False):
        self.app, self.logins, self.read_only = app, logins, read_only

    def _user(self, scope) -> str | None:
        server = scope.get("app")
        cookies = {}
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, _, val = part.strip().partition("=")
                    cookies[key] = val
        cookie_id = getattr(server, "cookie_id", None)
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        return getattr(server, "tokens", {}).get(token) if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if self.read_only and path.rstrip("/") == "/gradio_api/upload":
            return await _refuse(scope, send, 403, "this page is read-only: uploads are turned off")
        if self.logins is None or self.logins.allowed(self._user(scope)):
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET")
        if path.rstrip("/") in ("", "/login") and method in ("GET", "HEAD", "POST"):
            if path.rstrip("/") == "" and method == "POST":
                return await _refuse(scope, send, 401, "Not authenticated")
            if path.rstrip("/") == "":
                return await self._login_page(scope, receive, send)
            return await self.app(scope, receive, send)
        if method in ("GET", "HEAD") and (path.startswith(_OPEN_PREFIXES) or path in _OPEN_PATHS):
            return await self.app(scope, receive, send)
        return await _refuse(scope, send, 401, "Not authenticated")

    async def _login_page(self, scope, receive, send):
        """Gradio's login page, less the API description it embeds for anyone."""
        scope = {**scope, "query_string": b""}  # no deep links or ?all_endpoints before login
        start, chunks = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = re.sub(
                        rb"window\.gradio_api_info = .*?;</script>", b"window.gradio_api_info = null;</script>",
                        b"".join(chunks), count=1, flags=re.S,
                    )
                    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


async def _refuse(scope, send, status: int, detail: str):
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
