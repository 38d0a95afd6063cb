"""Where crop thumbnails live, keyed by ``crop_ref``: written by workers, served by the gateway.

The default keeps JPEG files under a folder (``paths.crops_dir``), sharded by camera and hour so
no folder grows without bound; a shared file system (NFS, a mounted bucket) makes it reachable
from every node. Writes are atomic (temp file + rename), so a reader never sees half a JPEG and a
replayed write of the same id simply replaces the file.
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
import time

from pedsearch.errors import InvalidInput, NotFound, NotReady

#: a crop reference (``\Z``, not ``$``, which would let a trailing newline through); the camera
#: folder starts as a camera id does, so ``..`` (a row written by hand into Milvus) cannot
#: reach outside the store
_REF = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]*/\d{10}/-?\d+\.jpg\Z")


class CropStore:
    """JPEG crops under ``root/<camera>/<YYYYMMDDHH>/<id>.jpg``.

    Args:
        root: folder of the store; created on first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root)

    @staticmethod
    def ref_for(camera_id: str, ts_us: int, detection_id: int) -> str:
        hour = time.strftime("%Y%m%d%H", time.gmtime(ts_us / 1e6))
        return f"{camera_id}/{hour}/{int(detection_id)}.jpg"

    def _path(self, ref: str) -> pathlib.Path:
        if not _REF.fullmatch(ref):
            raise InvalidInput(f"crop reference {ref!r} is malformed")
        return self.root / ref

    def put(self, ref: str, jpeg: bytes) -> str:
        path = self._path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(jpeg)
            os.replace(tmp, path)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> bytes:
        """The JPEG of ``ref``.

        Raises:
            InvalidInput: ``ref`` is malformed.
            NotFound: no crop file at its path (none, or a folder in its place).
            NotReady: the file is there but cannot be read (permissions, an I/O error of a
                shared file system): the store needs fixing, which a caller should hear as
                such, not as a bug of its own (an escaped OSError is INTERNAL in the gateway).
        """
        path = self._path(ref)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"crop {ref} is not in the crop store at {self.root}") from None
        except IsADirectoryError:
            raise NotFound(f"crop {ref} is not in the crop store at {self.root}: {path} is a "
                           "folder, not a crop file") from None
        except OSError as exc:
            raise NotReady(f"crop {ref} cannot be read from the crop store: {path}: "
                           f"{exc.strerror or exc}; check that this process can read "
                           "paths.crops_dir") from None

    def exists(self, ref: str) -> bool:
        return self._path(ref).is_file()
