"""``python -m mrl_pg`` runs the command line."""

from mrl_pg.cli import main

main()
