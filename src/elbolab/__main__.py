"""``python -m elbolab`` runs the command line."""
from .cli import main

main()
