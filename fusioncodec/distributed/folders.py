"""Folders of a dataset, on this machine or on a pyarrow file system (``s3://``, ``gs://``,
``hdfs://``, ``file://``...), and the jobs that code every file in one into another.

Local folders (and ``file://``) go through :data:`fusioncodec.file_jobs.LOCAL`, the atomic
writer; an object store writes each object whole when its stream closes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fusioncodec.errors import ArgumentError
from fusioncodec.file_jobs import LOCAL, Job, show
from fusioncodec.files import is_image

__all__ = ["RAY_NEEDS", "Folder", "FolderFiles", "dataset_jobs"]

RAY_NEEDS = "pip install 'fusioncodec[ray]'"


@dataclass(frozen=True)
class Folder:
    """A folder on this machine (``fs`` None) or on a pyarrow file system."""

    path: str
    fs: Any = None

    @classmethod
    def of(cls, where: str | os.PathLike) -> Folder:
        text = os.fspath(where)
        if "://" not in text:
            return cls(text)
        try:
            from pyarrow import fs
        except ImportError:
            raise ArgumentError(f"{show(text)}: a URI needs pyarrow: {RAY_NEEDS}") from None
        try:
            filesystem, path = fs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:
            raise ArgumentError(f"{show(text)}: not a folder pyarrow can open ({exc})") from None
        if isinstance(filesystem, fs.LocalFileSystem):
            return cls(path)
        return cls(path, filesystem)

    def join(self, name: str) -> str:
        return os.path.join(self.path, name) if self.fs is None else f"{self.path}/{name}"

    def names(self) -> list[str]:
        """The names of the files directly in the folder, sorted."""
        if self.fs is None:
            try:
                return sorted(e.name for e in os.scandir(self.path) if e.is_file())
            except OSError as exc:
                raise ArgumentError(f"{show(self.path)}: cannot list: {exc.strerror}") from None
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.path, allow_not_found=False))
        return sorted(PurePosixPath(i.path).name for i in infos if i.type == fs.FileType.File)

    def inputs(self, kind: str, shown: str) -> list[str]:
        """The names of the pictures (``encode``) or ``.fcb`` files (``decode``) directly in
        the folder, sorted; ArgumentError (naming the folder as ``shown``) if there are none."""
        if kind == "encode":
            names = [n for n in self.names() if is_image(Path(n))]
        else:
            names = [n for n in self.names() if n.lower().endswith(".fcb")]
        if not names:
            what = "pictures" if kind == "encode" else ".fcb files"
            raise ArgumentError(f"{show(shown)}: no {what} in this folder")
        return names


class FolderFiles:
    """:class:`~fusioncodec.file_jobs.Files` reading from one folder's file system and
    writing to another's (local ends go through :data:`~fusioncodec.file_jobs.LOCAL`)."""

    def __init__(self, source_fs: Any, output_fs: Any) -> None:
        self.source_fs, self.output_fs = source_fs, output_fs

    def read_bytes(self, source: str) -> bytes:
        if self.source_fs is None:
            return LOCAL.read_bytes(source)
        with self.source_fs.open_input_file(source) as f:
            return f.read()

    def read_container(self, source: str) -> Any:
        if self.source_fs is None:
            return LOCAL.read_container(source)
        from fusioncodec.file_jobs import FileFailure
        from fusioncodec.sources import read_container

        if self.source_fs.get_file_info(source).size == 0:
            raise FileFailure(f"{show(source)}: empty file")
        with self.source_fs.open_input_stream(source) as f:
            return read_container(f)

    def exists(self, output: str | Path) -> bool:
        if self.output_fs is None:
            return LOCAL.exists(output)
        from pyarrow import fs

        return self.output_fs.get_file_info(str(output)).type != fs.FileType.NotFound

    def write_new(self, output: str | Path, data: bytes, replace: bool) -> None:
        if self.output_fs is None:
            return LOCAL.write_new(output, data, replace)
        if not replace and self.exists(output):
            raise FileExistsError(f"{output} exists")
        with self.output_fs.open_output_stream(str(output)) as f:  # whole on close
            f.write(data)


def dataset_jobs(src: str | os.PathLike, dst: str | os.PathLike, kind: str, layer: str) -> list:
    """One :class:`~fusioncodec.file_jobs.Job` per picture (``encode``) or ``.fcb`` file
    (``decode``) directly in ``src``, its output in ``dst`` named as ``fcodec`` names it
    (``<stem>.fcb``; ``<stem>.<layer>.png``), sorted by name. ``dst`` is made if missing."""
    source, output = Folder.of(src), Folder.of(dst)
    names = source.inputs(kind, os.fspath(src))
    if output.fs is None:
        os.makedirs(output.path, exist_ok=True)
    else:
        output.fs.create_dir(output.path, recursive=True)
    jobs, targets = [], set()
    for name in names:
        stem = PurePosixPath(name).stem
        if kind == "encode":
            target = f"{stem}.fcb"
        else:
            named = layer if layer != "auto" else _best_layer(source, name)
            target = f"{stem}.{named}.png"
        if target in targets:
            raise ArgumentError(f"two inputs in {show(os.fspath(src))} would both write {target}")
        targets.add(target)
        jobs.append(Job(source.join(name), output.join(target)))
    return jobs


def _best_layer(folder: Folder, name: str) -> str:
    """The layer ``--layer auto`` names an output after: the best one the header lists."""
    from fusioncodec.container import MAX_HEADER_SIZE, peek_header
    from fusioncodec.sources import default_layer

    try:
        if folder.fs is None:
            with open(folder.join(name), "rb") as f:
                head = f.read(MAX_HEADER_SIZE)
        else:
            with folder.fs.open_input_stream(folder.join(name)) as f:
                head = f.read(MAX_HEADER_SIZE)
        return default_layer(peek_header(head).kinds)
    except (OSError, ValueError):
        return "human"  # unreadable: its job reports why
