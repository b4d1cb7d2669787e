"""Sharing safely: the password file, `qa passwd`, and a server whose every route needs a login.

Raw HTTP and gradio_client here; the login page in a real browser is in test_browser.py.
"""

from __future__ import annotations

import contextlib
import re
import socket

import httpx
import pytest
from click.testing import CliRunner

from qa import QA
from qa.auth import AuthError, Logins, read_users, set_password
from qa.cli import cli
from qa.ui import build_app, launch

# A line in the form `htpasswd -B -C 5` writes: bcrypt with its "$2y$" prefix (the
# hash made with the bcrypt package and given that prefix; the algorithm is the same).
HTPASSWD_LINE = "carol:$2y$05$jKPXsVk23./5C3WRTHhwguxnmxlmnWhjjUUC/HTKgpIHf/xbcl2lC"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_passwd_writes_bcrypt_hashes_and_changes_a_password(tmp_path):
    file = tmp_path / "users"
    runner = CliRunner()
    result = runner.invoke(cli, ["passwd", str(file), "alice", "--stdin"], input="open sesame\n")
    assert result.exit_code == 0, result.output
    assert "added alice" in result.output
    text = file.read_text()
    assert "open sesame" not in text and re.fullmatch(r"alice:\$2b\$12\$[./A-Za-z0-9]{53}\n", text)
    assert file.stat().st_mode & 0o077 == 0  # readable by its owner only
    result = runner.invoke(cli, ["passwd", str(file), "bob"], input="pw-bob\npw-bob\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["passwd", str(file), "alice", "--stdin"], input="new secret\n")
    assert "changed the password of alice" in result.output
    users = read_users(file)
    assert [u for u, _ in users.hashes] == ["alice", "bob"]
    assert users.check("alice", "new secret") and not users.check("alice", "open sesame")
    assert users.check("bob", "pw-bob") and not users.check("nobody", "pw-bob")
    # typed twice, differently: click asks again until both match
    result = runner.invoke(cli, ["passwd", str(file), "carl"], input="one\ntwo\none\none\n")
    assert "carl" in file.read_text()
    bad = runner.invoke(cli, ["passwd", str(file), "a:b", "--stdin"], input="x\n")
    assert bad.exit_code == 1 and "not a valid user name" in bad.output


def test_a_file_in_htpasswd_bcrypt_form_is_read(tmp_path):
    file = tmp_path / "users"
    file.write_text(f"# made with htpasswd -B\n{HTPASSWD_LINE}\n")
    users = read_users(file)
    assert "carol" in users and users.check("carol", "s3cret-carol")
    assert not users.check("carol", "wrong")
    set_password(file, "dave", "pw-dave", rounds=4)
    assert read_users(file).check("dave", "pw-dave") and HTPASSWD_LINE in file.read_text()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no auth file at"),
        ("", "has no users"),
        ("alice:plaintext\n", "is not a bcrypt hash"),
        ("alice:$apr1$abc$defghijklmnopqrstuvwx\n", "is not a bcrypt hash"),
        ("just a line\n", "expected USER:HASH"),
    ],
)
def test_a_missing_or_malformed_file_is_a_one_line_error_and_nothing_is_served(tmp_path, content, message):
    file = tmp_path / "users"
    if content is not None:
        file.write_text(content)
    with pytest.raises(AuthError, match=message):
        read_users(file)
    result = CliRunner().invoke(cli, ["serve", "--auth", str(file), "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    env = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "none")], env={"QA_AUTH_FILE": str(file)})
    assert env.exit_code == 1 and message in env.output


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, seed_index, real_embedder):
    folder = tmp_path_factory.mktemp("auth")
    file = folder / "users"
    set_password(file, "alice", "right-password", rounds=4)
    app = build_app(QA(seed_index, embedder=real_embedder))
    port = _free_port()
    launch(app, logins=Logins(read_users(file)), server_name="127.0.0.1", server_port=port,
           prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", app, file
    finally:
        app.close()


@contextlib.contextmanager
def _login(base: str, password: str = "right-password"):
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/login", data={"username": "alice", "password": password}).status_code == 200
        yield client


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _routes(routes, prefix=""):
    """(path, method) of every route, mounted ones included."""
    for route in routes:
        path = prefix + getattr(route, "path", "")
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            yield from _routes(included.routes, prefix + (included.prefix or ""))
            continue
        for method in getattr(route, "methods", None) or {"GET"}:
            if method != "HEAD":
                yield _concrete(path), method


def test_every_route_of_the_running_app_refuses_a_request_without_login(guarded):
    base, app, _ = guarded
    paths = set(_routes(app.server_app.routes))
    assert len(paths) > 40  # the real list, not a hand-made one
    opened = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for path, method in sorted(paths):
            response = client.request(method, path, data={} if method == "POST" else None)
            if response.status_code != 401:
                opened.append((method, path, response.status_code))
    # Only the login page, the login form and the front end's own files answer.
    allowed = {"/", "/login", "/login/", "/favicon.ico", "/theme.css", "/gradio_api/theme.css", "/robots.txt",
               "/manifest.json", "/pwa_icon", "/gradio_api/startup-events"}
    for method, path, status in opened:
        assert path in allowed or path.startswith(("/assets/", "/svelte/", "/static/")), (method, path, status)
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
        # the login page names neither the API nor the documents
        assert "/ask" not in page.text and "verify" not in page.text and "000_1e317d521278b0dc" not in page.text
        for path in ("/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/heartbeat/abc",
                     "/gradio_api/upload", "/gradio_api/file=/etc/hostname", "/gradio_api/queue/data?session_hash=a",
                     "/gradio_api/monitoring/x", "/gradio_api/cancel", "/gradio_api/token", "/gradio_api/call/ask"):
            method = "POST" if path.endswith(("/upload", "/call/ask", "/cancel")) else "GET"
            assert client.request(method, path).status_code == 401, path
        assert client.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}).status_code == 401


def test_a_wrong_password_is_refused_and_the_right_one_opens_everything(guarded):
    base, _, _ = guarded
    with httpx.Client(base_url=base, timeout=60) as client:
        wrong = client.post("/login", data={"username": "alice", "password": "wrong"})
        assert wrong.status_code == 400 and client.get("/config").status_code == 401
        nobody = client.post("/login", data={"username": "mallory", "password": "right-password"})
        assert nobody.status_code == 400
    with _login(base) as client:
        assert client.get("/config").status_code == 200
        info = client.get("/gradio_api/info").json()
        assert "/ask" in info["named_endpoints"]
        page = client.get("/")
        assert '"auth_required":true' not in page.text.replace(" ", "") and "Ask your documents" in page.text


def test_gradio_client_is_refused_without_credentials_and_answers_with_them(guarded):
    from gradio_client import Client

    base, _, _ = guarded
    with pytest.raises(Exception):
        Client(base + "/", verbose=False)
    with pytest.raises(Exception):
        Client(base + "/", auth=("alice", "wrong"), verbose=False)
    client = Client(base + "/", auth=("alice", "right-password"), verbose=False)
    out = client.predict(question="Who heads the East Turkistan government in exile?", k=1, api_name="/ask")
    assert out["answered"] and out["results"][0]["citation"] == "001_a6e42268cab0470d.txt ¶6"


def test_a_user_removed_from_the_file_loses_their_session(guarded, tmp_path):
    base, _, file = guarded
    with _login(base) as client:
        assert client.get("/config").status_code == 200
        saved = file.read_text()
        try:
            set_password(file, "zed", "pw-zed", rounds=4)
            file.write_text(file.read_text().replace(saved.strip(), ""))  # alice removed, zed kept
            assert client.get("/config").status_code == 401
        finally:
            file.write_text(saved)
        assert client.get("/config").status_code == 200


@pytest.fixture(scope="module")
def read_only_url(seed_index, real_embedder):
    app = build_app(QA(seed_index, embedder=real_embedder), read_only=True)
    port = _free_port()
    launch(app, read_only=True, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        app.close()


def test_a_read_only_page_refuses_uploads_through_the_api(read_only_url, seed_index):
    base, app = read_only_url
    with httpx.Client(base_url=base, timeout=60) as client:
        refused = client.post("/gradio_api/upload", files={"files": ("note.txt", b"The ferry leaves at nine.")})
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        config = client.get("/config").json()
    # no upload control and no event that writes the index
    assert not [c for c in config["components"] if c.get("props", {}).get("elem_id") in ("upload", "add")]
    assert not [fn for fn in app.fns.values() if fn.name == "add_files"]
    assert not (seed_index / "uploads").exists()
