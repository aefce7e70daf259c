"""The Python SDK uses the login the `custody` command line stores: the real `custody login` runs
the device flow (approved from a browser session signed in by mailed link, read from the
server's outbox), then the SDK acts with the stored token, renews it when it runs out (rotating
the refresh token in the same file), and the command line goes on with what the SDK stored."""
from __future__ import annotations

import email
import email.policy
import glob
import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import custody
from serverproc import REPO_ROOT


def cli_bin() -> str:
    for c in (
        os.path.join(os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/custody-target", "debug", "custody"),
        os.path.join(REPO_ROOT, "target", "debug", "custody"),
    ):
        if os.path.isfile(c):
            return c
    raise RuntimeError("the custody command line is not built (cargo build -p custody)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects, like a browser without scripts."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def get(self, path: str) -> tuple[int, str]:
        return self._send(urllib.request.Request(self.base + path if path.startswith("/") else path))

    def post(self, path: str, form: dict) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        return self._send(urllib.request.Request(self.base + path, data=data, method="POST"))

    def _send(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:  # 3xx (not followed) and refusals
            return e.code, e.read().decode()


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} in {html}"
    return found.group(1)


def sign_in_by_mail(server, address: str) -> Browser:  # type: ignore[no-untyped-def]
    browser = Browser(server.url)
    _, page = browser.get("/sign-in")
    status, _ = browser.post("/sign-in/email", {"email": address, "csrf": hidden(page, "csrf"), "next": "/account"})
    assert status == 200
    link = None
    deadline = time.time() + 30
    while link is None and time.time() < deadline:
        for path in glob.glob(os.path.join(server.data_dir, "outbox", "*.eml")):
            with open(path, "rb") as f:
                mail = email.message_from_binary_file(f, policy=email.policy.default)
            if mail["To"] == address and "sign-in" in mail["Subject"]:
                text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
                link = re.search(r"http\S+/sign-in/email/\S+", text).group(0)  # type: ignore[union-attr]
        time.sleep(0.3)
    assert link, "no sign-in mail in the outbox"
    status, _ = browser.get(link)
    assert status == 303
    return browser


def test_the_sdk_uses_and_renews_the_login_of_the_command_line(server, admin, tmp):  # type: ignore[no-untyped-def]
    address = f"login-{uuid.uuid4().hex[:6]}@example.com"
    admin.graphql("mutation($e: String!) { issueToken(email: $e) }", {"e": address})
    browser = sign_in_by_mail(server, address)
    env = dict(os.environ, HOME=tmp, XDG_CONFIG_HOME=os.path.join(tmp, "config"))
    for name in ("CUSTODY_URL", "CUSTODY_TOKEN", "CUSTODY_CONFIG"):
        env.pop(name, None)

    login = subprocess.Popen(
        [cli_bin(), "login", "--url", server.url, "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    code = None
    assert login.stderr is not None
    for line in login.stderr:
        if line.startswith("and approve the code "):
            code = line.split()[4]
            break
    assert code, "custody login shows a code"
    _, page = browser.get(f"/device?code={code}")
    status, _ = browser.post("/device", {"code": code, "decision": "approve", "csrf": hidden(page, "csrf")})
    assert status == 200
    out, _ = login.communicate(timeout=60)
    assert login.returncode == 0 and json.loads(out)["email"] == address

    config = os.path.join(tmp, "config", "custody", "config.json")
    assert os.stat(config).st_mode & 0o777 == 0o600
    with open(config) as f:
        stored = json.load(f)
    old_refresh = stored["refresh_token"]

    saved = {k: os.environ.pop(k, None) for k in ("CUSTODY_URL", "CUSTODY_TOKEN", "CUSTODY_CONFIG")}
    os.environ["CUSTODY_CONFIG"] = config
    try:
        assert custody.Client().graphql("{ me { email } }")["me"]["email"] == address
        # The token runs out: the SDK renews it with the refresh token, and stores the new pair.
        stored["expires_at"] = "2020-01-01T00:00:00Z"
        with open(config, "w") as f:
            json.dump(stored, f)
        assert custody.Client().graphql("{ me { email } }")["me"]["email"] == address
        with open(config) as f:
            renewed = json.load(f)
        assert renewed["refresh_token"] != old_refresh and renewed["token"] != stored["token"]
        assert os.stat(config).st_mode & 0o777 == 0o600
    finally:
        os.environ.pop("CUSTODY_CONFIG", None)
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v
    # The command line goes on with the pair the SDK stored.
    whoami = subprocess.run([cli_bin(), "whoami", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["me"]["email"] == address
