"""Every ``OPSLAKE_*`` variable is read through ``opslake.settings.Settings``, secrets included.

An AST scan of the package (and of ``infra/`` but for Superset's own configuration): no module
but ``settings.py`` touches ``os.environ``/``os.getenv`` or reads an ``OPSLAKE_*`` name from a
mapping, except the listed ones, each with its reason.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from opslake.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ROOTS = (REPO / "opslake", REPO / "infra")
#: Files run inside Superset's own virtualenv, which cannot import opslake (so not Settings).
OUTSIDE = (REPO / "infra" / "superset",)

#: Modules that touch ``os.environ`` for something other than reading a setting.
ENVIRON_ALLOWED = {
    "opslake/orchestration/cluster.py": "builds the cluster's child processes' environments "
    "(passes OPSLAKE_*/AWS_* on to workers, the S3 credentials of its own endpoint)",
    "opslake/orchestration/runner.py": "sets DAGSTER_HOME, which Dagster itself reads",
    "opslake/orchestration/ui.py": "the Dagster UI's processes inherit this environment",
    "opslake/screens/server.py": "Superset's process inherits this environment, less this "
    "virtualenv's variables",
}
#: (module, variable) pairs read from a mapping outside settings.py.
NAME_READS_ALLOWED = {
    ("opslake/orchestration/ui.py", "OPSLAKE_PARTITION_START"): "the Dagster UI's child "
    "environment is given the first landed day unless it already names one",
}


def _modules() -> list[Path]:
    return [
        path
        for root in ROOTS
        for path in sorted(root.rglob("*.py"))
        if path != REPO / "opslake" / "settings.py"
        and not any(path.is_relative_to(o) for o in OUTSIDE)
    ]


def _opslake_constants(trees: dict[Path, ast.Module]) -> dict[str, str]:
    """Module-level names bound to an ``OPSLAKE_*`` string anywhere (``KEY_ENV`` …)."""
    found = {}
    for tree in trees.values():
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and node.value.value.startswith("OPSLAKE_")
            ):
                found |= {t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)}
    return found


def _name(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The ``OPSLAKE_*`` variable ``node`` spells, literally or by a constant, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if node.value.startswith("OPSLAKE_") else None
    key = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    return constants.get(key) if isinstance(key, str) else None


def _environ_uses(tree: ast.Module) -> list[int]:
    """Lines touching ``os.environ``/``os.getenv`` (or ``environ``/``getenv`` from os)."""
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "os"
        for alias in node.names
        if alias.name in ("environ", "getenv", "environb", "getenvb")
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "environb", "getenvb")
        )
        or (isinstance(node, ast.Name) and node.id in imported)
    ]


def _name_reads(tree: ast.Module, constants: dict[str, str]) -> list[tuple[int, str]]:
    """``m["OPSLAKE_X"]`` (read), ``m.get/pop/setdefault("OPSLAKE_X")``, ``getenv(...)``."""
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            name = _name(node.slice, constants)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("get", "pop", "setdefault", "getenv")
        ):
            name = _name(node.args[0], constants)
        else:
            continue
        if name is not None:
            reads.append((node.lineno, name))
    return reads


def _scan() -> tuple[list[str], set[str], set[tuple[str, str]]]:
    """Violations, and the allowances that were used."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in _modules()}
    constants = _opslake_constants(trees)
    problems, used_environ, used_names = [], set(), set()
    for path, tree in trees.items():
        where = path.relative_to(REPO).as_posix()
        if lines := _environ_uses(tree):
            if where in ENVIRON_ALLOWED:
                used_environ.add(where)
            else:
                problems += [f"{where}:{n}: touches os.environ" for n in lines]
        for line, name in _name_reads(tree, constants):
            if (where, name) in NAME_READS_ALLOWED:
                used_names.add((where, name))
            else:
                problems.append(f"{where}:{line}: reads {name} outside Settings")
    return problems, used_environ, used_names


def test_no_module_but_settings_reads_an_opslake_variable() -> None:
    problems, used_environ, used_names = _scan()
    assert problems == [], "read these through opslake.settings.Settings:\n" + "\n".join(problems)
    # An allowance no longer needed is dropped, so the lists stay the exceptions there are.
    assert used_environ == set(ENVIRON_ALLOWED)
    assert used_names == set(NAME_READS_ALLOWED)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nKEY = os.environ.get('OPSLAKE_DATA_KEY')\n",
        "from os import getenv\nKEY = getenv('HOME')\n",
        "NAME = 'OPSLAKE_API_KEY'\ndef f(env):\n    return env[NAME]\n",
        "def f(env):\n    return env.get('OPSLAKE_SUPERSET_PORT', '8088')\n",
    ],
)
def test_the_scan_finds_a_read_outside_settings(source: str) -> None:
    tree = ast.parse(source)
    constants = _opslake_constants({Path("m.py"): tree})
    assert _environ_uses(tree) or _name_reads(tree, constants)


def test_a_variable_written_for_a_child_is_no_read() -> None:
    tree = ast.parse("def f(env):\n    env['OPSLAKE_HOME'] = '/x'\n    return {'OPSLAKE_A': 1}\n")
    assert _name_reads(tree, {}) == [] and _environ_uses(tree) == []


def test_secrets_are_read_but_never_shown() -> None:
    secrets = {
        "OPSLAKE_DATA_KEY": "ab" * 16,
        "OPSLAKE_DATA_KEY_PREVIOUS": "cd" * 16,
        "OPSLAKE_API_KEY": "olk_0123_topsecret",
        "OPSLAKE_BACKUP_PASSPHRASE_VAR": "MY_PASSPHRASE",
        "MY_PASSPHRASE": "correct horse battery",
        "OPSLAKE_SUPERSET_ADMIN_PASSWORD": "superset-pw",
        "OPSLAKE_SUPERSET_DATABASE_URI": "postgresql://u:dbpw@db/superset",
        "OPSLAKE_MQTT_PASSWORD": "mqtt-pw",
        "OPSLAKE_DINGTALK_SECRET": "SECding",
    }
    settings = Settings.from_env(secrets)
    assert settings.data_key == "ab" * 16 and settings.data_key_previous == "cd" * 16
    assert settings.api_key == "olk_0123_topsecret"
    assert settings.backup_passphrase == "correct horse battery"
    assert settings.superset_admin_password == "superset-pw"
    assert settings.variables["OPSLAKE_DINGTALK_SECRET"] == "SECding"
    shown = repr(settings) + str(settings)
    leaked = [k for k, v in secrets.items() if v in shown and k != "OPSLAKE_BACKUP_PASSPHRASE_VAR"]
    assert leaked == []
    # Settings travel to worker processes (Dask pickles them): they stay picklable.
    assert pickle.loads(pickle.dumps(settings)) == settings


def test_superset_settings_and_overrides() -> None:
    settings = Settings.from_env(
        {"HOME": "/home/u", "OPSLAKE_SUPERSET_PORT": "8099", "OPSLAKE_SUPERSET_WORKERS": "4"},
        overrides={"OPSLAKE_SUPERSET_HOST": "0.0.0.0"},
    )
    assert settings.superset_venv == Path("/home/u/.cache/opslake/superset-venv")
    assert (settings.superset_host, settings.superset_port, settings.superset_workers) == (
        "0.0.0.0",
        8099,
        4,
    )
    assert settings.superset_upstream == "http://127.0.0.1:8099"
    with pytest.raises(Exception, match="OPSLAKE_SUPERSET_WORKERS='33'"):
        Settings.from_env({"OPSLAKE_SUPERSET_WORKERS": "33"})
