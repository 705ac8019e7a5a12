"""Superset signs in whom OpsLake's door says (runs in Superset's venv, not OpsLake's).

The generated ``superset_config.py`` loads this when ``opslake serve --superset-door`` fronts
Superset (``AUTH_TYPE = AUTH_REMOTE_USER``). The door (``opslake/api/gateway.py``) sends the
signed-in user's name, the Superset roles mapped from the OpsLake role, and a shared secret read
from a 0600 file in Superset's state directory. The name and roles count only when the secret
matches, compared in constant time; otherwise they are removed before Flask sees the request.

A browser request without them is anonymous even with a Superset session cookie: Superset is
reached only through the door, whose session check and audit cannot be skipped by going to
Superset's loopback port with a cookie the door's visit left. A REST call with a JWT
(``Authorization: Bearer`` from ``/api/v1/security/login``, provider db) is left to Superset, so
``opslake screens import`` and role provisioning work unchanged.

The user is created at the first visit and given exactly the roles sent (roles Superset does
not have are skipped; none left is 403). ``reserved`` (the service's own administrator, used by
provisioning and the report renderer) is never created or changed here.
"""

import hmac
from pathlib import Path
from urllib.parse import unquote

#: The door's headers as WSGI names them.
SECRET = "HTTP_X_OPSLAKE_GATEWAY_SECRET"
USER = "HTTP_X_OPSLAKE_USER"
ROLES = "HTTP_X_OPSLAKE_ROLES"
#: Where a trusted identity is kept for the request (not a header: a client cannot set it).
TRUSTED_USER = "opslake.user"
TRUSTED_ROLES = "opslake.roles"


class TrustedHeaders:
    """WSGI middleware: keeps the door's identity when the secret matches, drops it always."""

    def __init__(self, app, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    def __call__(self, environ, start_response):
        given = environ.pop(SECRET, "").encode()
        user = environ.pop(USER, "")
        roles = environ.pop(ROLES, None)
        environ.pop(TRUSTED_USER, None)
        environ.pop(TRUSTED_ROLES, None)
        if user and given and hmac.compare_digest(given, self.secret):
            environ[TRUSTED_USER] = unquote(user)
            if roles is not None:
                environ[TRUSTED_ROLES] = [unquote(r) for r in roles.split(",") if r]
        return self.app(environ, start_response)


def mutator(secret_file: Path, reserved: str):
    """``FLASK_APP_MUTATOR``: install the middleware and the per-request sign-in."""
    secret = Path(secret_file).read_text().strip()

    def install(app) -> None:
        from flask import abort, g, request
        from flask_login import current_user, login_user, logout_user

        app.wsgi_app = TrustedHeaders(app.wsgi_app, secret)

        @app.before_request
        def opslake_sign_in():
            name = request.environ.get(TRUSTED_USER)
            if name is None:
                if current_user.is_authenticated and "Authorization" not in request.headers:
                    logout_user()
                    g.user = current_user
                return
            sm = app.appbuilder.sm
            user = sm.find_user(username=name)
            wanted = request.environ.get(TRUSTED_ROLES)
            if name != reserved and wanted is not None:
                roles = [r for r in (sm.find_role(n) for n in wanted) if r is not None]
                if not roles:
                    abort(
                        403,
                        description=f"none of the roles {wanted} exists in Superset; "
                        "run `opslake screens start` to provision them",
                    )
                if user is None:
                    user = sm.add_user(
                        username=name,
                        first_name=name,
                        last_name="-",
                        email=f"{name}@opslake.invalid",
                        role=roles,
                    )
                elif sorted(r.name for r in user.roles) != sorted(r.name for r in roles):
                    user.roles = roles
                    sm.update_user(user)
            if not user or not user.is_active:
                abort(403, description=f"Superset has no active user {name!r}")
            if not current_user.is_authenticated or current_user.id != user.id:
                login_user(user)
            g.user = user

    return install
