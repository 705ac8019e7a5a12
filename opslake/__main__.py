"""``python -m opslake`` runs the CLI."""

from opslake.cli import main

main()
