"""``python -m mrl_pg`` runs the command line."""

from .cli import main

main()
