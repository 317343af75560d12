"""Writing rows: loading files, records and arrays (upserts, embedding what has no vector)
into mrl_pg's own tables or adopted ones, and deleting them.

- :mod:`~mrl_pg.ingest.load`: the entry points, one transaction per load by default;
- :mod:`~mrl_pg.ingest.readers` and :mod:`~mrl_pg.ingest.record_files`: JSONL, CSV, Parquet
  and ``.npy`` files, checked line by line;
- :mod:`~mrl_pg.ingest.batches`, :mod:`~mrl_pg.ingest.run`, :mod:`~mrl_pg.ingest.writer`:
  batching, embedding and COPY into mrl_pg's table;
- :mod:`~mrl_pg.ingest.adopted` and :mod:`~mrl_pg.ingest.adopted_writer`: the same for a
  table of the user's own, upserting on its key;
- :mod:`~mrl_pg.ingest.delete`: deleting by key or metadata filter.
"""

from mrl_pg.ingest.delete import DeleteReport, delete_rows
from mrl_pg.ingest.load import Embedder, IngestReport, ingest_arrays, ingest_file, ingest_records

__all__ = [
    "DeleteReport",
    "Embedder",
    "IngestReport",
    "delete_rows",
    "ingest_arrays",
    "ingest_file",
    "ingest_records",
]
