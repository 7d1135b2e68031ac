"""The Ray actors of a job: each loads the codec once and codes one file per call.

A :class:`Task` says what every worker of a job does; the driver gives it to a subclass of
:class:`Worker` made for the job, so that it travels with the class.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fusioncodec.distributed.folders import FolderFiles
from fusioncodec.file_jobs import (
    FileFailure,
    Files,
    Job,
    decode_job,
    encode_job,
    read_coded,
    run_job,
    show,
)
from fusioncodec.messages import error_reason

__all__ = ["KillingFiles", "Task", "Worker"]


@dataclass(frozen=True)
class Task:
    """What every worker of a job does with its files (pickled to the workers)."""

    kind: str  # "encode" | "decode" | "machine" (decode to arrays, nothing written)
    weights: str | None
    device: str
    threads: int
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    source_fs: Any = None
    output_fs: Any = None
    kill_hook: dict[str, Any] | None = None


class Worker:
    """A Ray actor: loads the codec once, then codes one file per call."""

    task: Task  # set by the driver on a subclass made for each job

    def __init__(self) -> None:
        import torch

        task = self.task
        torch.set_num_threads(task.threads)
        files: Files = FolderFiles(task.source_fs, task.output_fs)
        self.files = files if task.kill_hook is None else KillingFiles(files, task.kill_hook)
        self.codec: Any = None
        self.load_error = ""
        try:  # now, so that a file's time is its own; a failure fails every file, one by one
            import fusioncodec

            self.codec = fusioncodec.load(task.weights, task.device)
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:
            where = show(task.weights) if task.weights else "the default weights"
            self.load_error = f"cannot load {where} on this worker: {error_reason(exc)}"

    def get_codec(self) -> Any:
        if self.codec is None:
            raise FileFailure(self.load_error)
        return self.codec

    def work(self, job: Job, image_format: str) -> dict[str, Any]:
        t, files = self.task, self.files
        if t.kind == "encode":
            o = t.options
            return encode_job(
                job, self.get_codec, o["layers"], o["quality"], o["human_quality"], t.force, files
            )
        return decode_job(job, self.get_codec, t.options["layer"], image_format, t.force, files)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        if self.task.kind == "machine":
            return self.machine_layer(batch)
        rows, seconds = [], []
        for at in range(len(batch["source"])):
            start = time.perf_counter()
            shown = (str(batch["input"][at]), str(batch["output_name"][at]))
            job = Job(str(batch["source"][at]), str(batch["output"][at]), shown)
            rows.append(json.dumps(self.row(job, str(batch["format"][at]))))
            seconds.append(time.perf_counter() - start)
        return {"row": rows, "seconds": seconds, "position": list(batch["position"])}

    def row(self, job: Job, image_format: str) -> dict[str, Any]:
        """The job's result row. An output that exists already was written by an earlier
        try of this file, whose worker died before its row came back: skipped, as a rerun
        would."""
        if not self.task.force and self.files.exists(str(job.output)):
            return {"input": job.name, "output": job.out_name, "ok": True, "skipped": True}
        try:
            return run_job(job, lambda j: self.work(j, image_format))
        except Exception as exc:  # a bug, not the file: still one row, the job goes on
            error = f"{job.name}: internal error ({type(exc).__name__}: {exc})"
            return {"input": job.name, "output": job.out_name, "ok": False, "error": error}

    def machine_layer(self, batch: dict[str, Any]) -> dict[str, list]:
        import numpy as np

        names, images = [], []
        for source in batch["source"]:
            container = read_coded(Job(str(source), None), self.files)
            image = self.get_codec().decode(container, "machine")
            names.append(PurePosixPath(str(source)).name)
            images.append(np.asarray(image))
        return {"name": names, "image": images}


class KillingFiles:
    """Test hook: SIGKILL the worker halfway through writing the temporary of the input
    named ``hook["input"]``, once (a marker file records each kill) or ``every`` time."""

    def __init__(self, files: Files, hook: dict[str, Any]) -> None:
        self.files, self.hook = files, hook
        self.read_bytes, self.read_container = files.read_bytes, files.read_container
        self.exists = files.exists

    def write_new(self, output: str | Path, data: bytes, replace: bool) -> None:
        import signal

        from fusioncodec.files import atomic_file

        marker = Path(self.hook["marker"])
        if PurePosixPath(str(output)).stem.split(".")[0] == self.hook["input"] and (
            self.hook.get("every") or not marker.exists()
        ):
            with atomic_file(output) as tmp:
                tmp.write_bytes(data[: len(data) // 2])
                with marker.open("a") as f:
                    f.write(f"{os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
        self.files.write_new(output, data, replace)
