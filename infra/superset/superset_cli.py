"""Run several ``superset`` CLI commands in one interpreter (Superset's own venv).

Each ``superset …`` process spends ~15 s importing Superset before it does anything, so the
first start (``db upgrade``, ``fab create-admin``, ``init``) runs them here one after another.
Usage: python superset_cli.py '["db", "upgrade"]' '["init"]' …  (each argument a JSON list).
An argument ``{env:NAME}`` is replaced by the environment variable NAME, so secrets never
appear in the process list. Stops at the first command that fails, with its exit status.
"""

import json
import os
import re
import sys

from superset.cli.main import superset


def main() -> int:
    """Run each JSON-encoded argument list as one ``superset`` command."""
    for raw in sys.argv[1:]:
        args = [
            os.environ[m.group(1)] if (m := re.fullmatch(r"\{env:(\w+)\}", a)) else a
            for a in json.loads(raw)
        ]
        print(f"superset_cli: superset {' '.join(args[:2])} …", flush=True)
        try:
            superset.main(args=args, prog_name="superset", standalone_mode=False)
        except SystemExit as exc:  # click commands may exit on their own
            if exc.code not in (0, None):
                return int(exc.code) if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
