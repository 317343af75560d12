"""Import every module of the installed package and every name in every ``__all__``."""

import importlib
import pkgutil

import mrl_pg

# Alembic's scripts run inside Alembic (the host project runs them); __main__ runs the CLI.
NOT_IMPORTED = ("mrl_pg.migrations.", "mrl_pg.__main__")
modules = ["mrl_pg"] + [
    m.name for m in pkgutil.walk_packages(mrl_pg.__path__, "mrl_pg.")
    if not m.name.startswith(NOT_IMPORTED)
]
names = 0
for name in modules:
    module = importlib.import_module(name)
    for public in getattr(module, "__all__", ()):
        getattr(module, public)
        names += 1
print(f"imported {len(modules)} modules and {names} names from their __all__")
