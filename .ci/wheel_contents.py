"""The wheel holds every module of the tree, the migrations, the SQL script and the data files."""

import sys
import zipfile
from pathlib import Path

repo, wheel = Path(sys.argv[1]), Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
wanted = {str(p.relative_to(repo)) for p in (repo / "mrl_pg").rglob("*")
          if p.is_file() and "__pycache__" not in p.parts}
wanted |= {"mrl_pg/migrations/" + str(p.relative_to(repo / "migrations"))
           for p in (repo / "migrations").rglob("*")
           if p.is_file() and "__pycache__" not in p.parts}
wanted |= {"mrl_pg/sql/" + p.name for p in (repo / "sql").glob("*.sql")}
missing = sorted(wanted - names)
if missing:
    sys.exit(f"the wheel lacks {len(missing)} file(s) of the tree: {', '.join(missing)}")
print(f"the wheel holds all {len(wanted)} files of mrl_pg/, migrations/ and sql/")
