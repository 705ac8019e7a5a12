"""Superset screens: dashboards as code, the Superset server, roles and row-level security.

``model`` (screen objects → Superset YAML), ``datasets`` and ``screens`` (what is shown),
``bundle`` (generate ``dashboards/``, render it for import), ``server`` (config, secrets,
start/stop by PID), ``rest`` (REST client, form login), ``access`` (roles, RLS, users),
``service`` (start + import + provision; the Python entry point), ``browser`` (headless
Chromium through Playwright).
"""
