"""A small client of Superset's REST API (JWT login plus CSRF token, as Superset requires).

Also the browser side of logging in: :func:`browser_cookies` logs in through Superset's own
login form and returns the session cookie a headless browser needs to open the screens.
"""

from __future__ import annotations

import re
from typing import Any, Self

import httpx

from opslake.errors import SupersetError


def rison(value: Any) -> str:
    """Encode ``value`` as Rison, the query-string format of Superset's list endpoints."""
    if value is True:
        return "!t"
    if value is False:
        return "!f"
    if value is None:
        return "!n"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if value and re.fullmatch(r"[A-Za-z_./~-][A-Za-z0-9_./~-]*", value):
            return value
        return "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(value, list | tuple):
        return "!(" + ",".join(rison(v) for v in value) + ")"
    if isinstance(value, dict):
        return "(" + ",".join(f"{rison(k)}:{rison(v)}" for k, v in value.items()) + ")"
    raise TypeError(f"cannot encode {type(value).__name__} as rison")


class SupersetClient:
    """An authenticated session with Superset's REST API as one user."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers={"Referer": self.url})
        r = self.http.post(
            "/api/v1/security/login",
            json={"username": username, "password": password, "provider": "db", "refresh": False},
        )
        if r.status_code != 200:
            raise SupersetError(
                f"Superset at {self.url} refused the login of {username!r} "
                f"({r.status_code}); check the password (admin: "
                "OPSLAKE_SUPERSET_ADMIN_PASSWORD or <state>/superset/"
                "admin-password)"
            )
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        # Writes need the CSRF token bound to this session's cookie, JWT or not.
        token = self._check(self.http.get("/api/v1/security/csrf_token/"), "csrf_token")
        self.http.headers["X-CSRFToken"] = token["result"]

    def close(self) -> None:
        """End the HTTP session."""
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, r: httpx.Response, what: str) -> Any:
        if r.status_code >= 400:
            raise SupersetError(
                f"Superset {r.request.method} {r.request.url.path} ({what}) "
                f"failed with {r.status_code}: {r.text[:800]}"
            )
        return r.json() if r.content else {}

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON resource."""
        return self._check(self.http.get(path, params=params or None), "get")

    def post(self, path: str, body: Any) -> Any:
        """POST JSON."""
        return self._check(self.http.post(path, json=body), "post")

    def put(self, path: str, body: Any) -> Any:
        """PUT JSON."""
        return self._check(self.http.put(path, json=body), "put")

    def delete(self, path: str) -> Any:
        """DELETE a resource."""
        return self._check(self.http.delete(path), "delete")

    def list_all(
        self,
        resource: str,
        columns: list[str] | None = None,
        filters: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Every row of a list endpoint (``chart``, ``dataset``, ``security/roles``…), paged."""
        rows: list[dict[str, Any]] = []
        page = 0
        while True:
            q: dict[str, Any] = {"page": page, "page_size": 100}
            if columns:
                q["columns"] = columns
            if filters:
                q["filters"] = filters
            batch = self.get(f"/api/v1/{resource}/", q=rison(q))
            rows += batch["result"]
            if len(batch["result"]) < 100:
                return rows
            page += 1

    def import_assets(self, bundle: bytes) -> None:
        """Import a bundle through ``/api/v1/assets/import/``: overwrites what it names."""
        r = self.http.post(
            "/api/v1/assets/import/",
            files={"bundle": ("opslake_screens.zip", bundle, "application/zip")},
        )
        self._check(r, "import")

    def chart_data(self, chart_id: int) -> dict[str, Any]:
        """Run a chart's saved query context (``GET /api/v1/chart/{id}/data/``)."""
        return self.get(f"/api/v1/chart/{chart_id}/data/", format="json", type="full")


def browser_cookies(url: str, username: str, password: str) -> list[dict[str, Any]]:
    """Log in through Superset's login form; the session cookie(s) for a browser context.

    Returns Playwright-style cookies (name, value, domain, path): hand them to
    ``BrowserContext.add_cookies`` and every page opened in that context is logged in.
    """
    url = url.rstrip("/")
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as http:
        page = http.get("/login/")
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text) or re.search(
            r'"csrf_token":\s*"([^"]+)"', page.text
        )
        token = (
            match.group(1)
            if match
            else http.get("/api/v1/security/csrf_token/").json().get("result", "")
        )
        r = http.post(
            "/login/", data={"username": username, "password": password, "csrf_token": token}
        )
        if r.status_code not in (302, 303) or "/login" in r.headers.get("location", "/login"):
            raise SupersetError(
                f"Superset's login form at {url}/login/ refused {username!r} "
                f"({r.status_code}); check the password"
            )
        host = httpx.URL(url).host
        return [
            {"name": c.name, "value": c.value, "domain": host, "path": c.path or "/"}
            for c in http.cookies.jar
        ]
