"""The storage layer: an index folder's committed generations, read and written.

- ``Reader`` (``qa.storage.reader``): everything retrieval reads of an index,
  the one interface a second back end would implement;
- ``Snapshot`` (``qa.storage.snapshot``): one committed generation of a folder,
  read-only, the ``Reader`` of this back end;
- ``Writer`` (``qa.storage.writer``): builds the next generation (a live catalog
  and a segment of what it added) and commits it with one ``os.replace`` of the
  manifest;
- ``qa.storage.segments``: the segments' schema, how they are read as one
  catalog, and when neighbouring ones are merged;
- ``qa.storage.merge``: segments written from other files (a merge, a migration);
- ``qa.storage.manifest``: what a commit consists of, its checks and errors.

Nothing here imports retrieval; retrieval imports this package only.
"""

from qa.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    REBUILD,
    UPGRADABLE,
    IndexCorrupt,
    IndexLocked,
    IndexMissing,
    IndexOutdated,
    ModelInfo,
    ModelMismatch,
    StoreError,
    check_model,
    read_manifest,
    sha256_file,
)
from qa.storage.reader import Reader, Vectors
from qa.storage.snapshot import Snapshot, open_snapshot
from qa.storage.merge import MIGRATIONS
from qa.storage.writer import PathState, StoredPassage, Writer

__all__ = [
    "FORMAT_VERSION", "MANIFEST", "REBUILD", "UPGRADABLE", "IndexCorrupt", "IndexLocked", "IndexMissing",
    "IndexOutdated", "MIGRATIONS", "ModelInfo", "ModelMismatch", "PathState", "Reader", "Snapshot", "StoreError",
    "StoredPassage", "Vectors", "Writer", "check_model", "open_snapshot", "read_manifest", "sha256_file",
]
