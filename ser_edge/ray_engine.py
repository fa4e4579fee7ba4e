"""Batch scoring on a Ray cluster: actors that keep one recognizer loaded score batches of
files, while the driver streams paths in and rows out, in input order.

Ray Core actors rather than Ray Data: the driver keeps the lazy path iterator, so a manifest
of millions of paths is never materialised as a dataset; rows come out in input order by
construction (batches are collected in the order they were submitted); and a batch returns
all its rows or none, so a batch retried after its worker died writes each file exactly once.
Rows are made by the same `score_one` as the local engine, so their values are identical.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ser_edge.scoring import batched, default_jobs, init_worker, score_one

__all__ = ["RayEngineError", "RayPool", "Scorer", "require_ray"]

#: Files per Ray task at most: Ray's cost per task (about a millisecond) is small against
#: scoring (2-50 ms a file here), and a batch lost with its worker is cheap to redo.
BATCH_FILES = 16
#: Batches submitted per actor and not yet written: one running, the others queued so that no
#: actor waits for the driver. Bounds the driver's memory whatever the number of files.
IN_FLIGHT_PER_ACTOR = 3
#: Times Ray restarts a dead actor and retries its batches, before a batch is split into files.
RETRIES = 3
#: For the tests only: a file path; the first actor to create that file exits right after
#: scoring one file, as if killed (one death per run, whatever the number of actors).
CRASH_ONCE_ENV = "SER_EDGE_RAY_CRASH_ONCE"


class RayEngineError(Exception):
    """Ray is missing, the cluster cannot be started or joined, or its workers cannot load the model."""


def require_ray() -> Any:
    """The `ray` module, or RayEngineError saying what to install."""
    try:
        import ray
    except ImportError as err:
        raise RayEngineError('--engine ray needs Ray, an optional extra: pip install "ser-edge[ray]"') from err
    return ray


class Scorer:
    """The state of one Ray actor: a recognizer loaded once, then batches of files scored with it."""

    def __init__(self, model: Optional[str], provider: str, cwd: str, crash_marker: Optional[str] = None,
                 decision: Optional[str] = None) -> None:
        with contextlib.suppress(OSError):
            os.chdir(cwd)  # relative paths, and the paths in error messages, read as on the driver
        init_worker(model, provider, decision)
        self._crash_marker = crash_marker

    def ready(self) -> bool:
        """Answers once the model is loaded."""
        return True

    def score(self, paths: list[str], windows: bool) -> list[list[dict]]:
        """The rows of each file, as `score_one` makes them."""
        out = []
        for path in paths:
            out.append(score_one(Path(path), windows))
            if self._crash_marker and _claim(self._crash_marker):
                os._exit(1)
        return out


def _claim(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class RayPool:
    """`jobs` Scorer actors on a Ray cluster (0: one per CPU of the cluster), as a context manager.

    address: a running cluster to join ("auto", "host:port", "ray://host:port"); None starts a
    local cluster with `jobs` CPUs (0: all cores) for the run, and stops it afterwards. Each
    actor asks for one CPU (and one GPU with provider "cuda"). Model and audio paths must be
    readable by the same path on every node. Ray restarts a dead actor and retries its
    batches; a batch that still fails is scored file by file, and a file that kills its
    worker every time gets an error row.
    """

    def __init__(self, jobs: int, model: Optional[str], provider: str, address: Optional[str] = None,
                 decision: Optional[str] = None) -> None:
        self.jobs, self.model, self.provider, self.address, self.decision = jobs, model, provider, address, decision
        self._actors: list = []
        self._refs: list[list] = []  # per actor: the batches it was sent that may still be unfinished
        self._owned = False

    def __enter__(self) -> RayPool:
        ray = require_ray()
        if not ray.is_initialized():
            if self.address:
                _check_reachable(self.address)
            try:
                local_cpus = None if self.address else self.jobs or default_jobs()  # a joined cluster has its own
                ray.init(address=self.address or "local", num_cpus=local_cpus, include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
            except Exception as err:  # Ray raises ConnectionError, RuntimeError or ValueError here
                where = f"join the Ray cluster at {self.address}" if self.address else "start a local Ray cluster"
                raise RayEngineError(f"cannot {where}: {err}") from err
            self._owned = True
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if cpus < 1:
                raise RayEngineError("the Ray cluster has no CPUs to run scoring actors on")
            # More actors than CPUs would wait for a CPU forever, holding their batches.
            n = min(self.jobs or cpus, cpus)
            actor = ray.remote(Scorer).options(num_cpus=1, num_gpus=1 if self.provider == "cuda" else 0,
                                               max_restarts=-1, max_task_retries=RETRIES)
            crash_marker = os.environ.get(CRASH_ONCE_ENV)
            self._actors = [actor.remote(self.model, self.provider, os.getcwd(), crash_marker, self.decision)
                            for _ in range(n)]
            self._refs = [[] for _ in self._actors]
            ray.get([a.ready.remote() for a in self._actors])
        except ray.exceptions.RayActorError as err:
            self.__exit__(None, None, None)
            raise RayEngineError(f"the Ray workers cannot load the model: {_reason(err)}") from err
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        ray = require_ray()
        if self._owned:
            ray.shutdown()  # ends the actors too, without a report per batch left unfinished
        else:
            for a in self._actors:
                ray.kill(a)
        self._actors, self._refs, self._owned = [], [], False

    @property
    def size(self) -> int:
        """The number of actors."""
        return len(self._actors)

    def score(self, files: Iterable[Path], windows: bool, total: Optional[int] = None) -> Iterator[list[dict]]:
        """Rows per file, in the order of `files`, which are read lazily: the driver holds at most
        IN_FLIGHT_PER_ACTOR batches per actor. `total` (the number of files, when known) makes
        batches smaller for short lists, so that every actor gets work."""
        window = IN_FLIGHT_PER_ACTOR * self.size
        size = BATCH_FILES if total is None else max(1, min(BATCH_FILES, total // window))
        batches = batched((str(f) for f in files), size)
        pending: deque = deque()
        try:
            while True:
                for batch in itertools.islice(batches, window - len(pending)):
                    pending.append((batch, self._submit(batch, windows)))
                if not pending:
                    return
                batch, ref = pending.popleft()
                yield from self._collect(batch, ref, windows)
        finally:
            for _, ref in pending:  # stopped early (Ctrl-C): the queued batches are not wanted
                require_ray().cancel(ref)

    def _submit(self, batch: list[str], windows: bool) -> Any:
        """Sends the batch to the actor with the fewest unfinished batches."""
        ray = require_ray()
        tracked = [ref for refs in self._refs for ref in refs]
        unfinished = set(ray.wait(tracked, num_returns=len(tracked), timeout=0)[1]) if tracked else set()
        self._refs = [[ref for ref in refs if ref in unfinished] for refs in self._refs]
        i = min(range(self.size), key=lambda k: len(self._refs[k]))
        ref = self._actors[i].score.remote(batch, windows)
        self._refs[i].append(ref)
        return ref

    def _collect(self, batch: list[str], ref: Any, windows: bool) -> Iterator[list[dict]]:
        ray = require_ray()
        try:
            results = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as err:
            if getattr(err, "actor_init_failed", False):
                raise RayEngineError(f"a restarted Ray worker cannot load the model: {_reason(err)}") from err
            if len(batch) == 1:
                results = [[{"path": batch[0], "kind": "file", "status": "error",
                             "error": f"the worker scoring this file died {RETRIES + 1} times ({_reason(err)})"}]]
            else:
                refs = [self._submit([p], windows) for p in batch]
                results = [rows for p, r in zip(batch, refs) for rows in self._collect([p], r, windows)]
        yield from results


def _check_reachable(address: str) -> None:
    """Fails at once when nothing listens at a host:port address (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto" and client addresses: Ray resolves them, and fails fast
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise RayEngineError(f"cannot join the Ray cluster at {address} ({err.strerror or err}); is its head node "
                             "running (ray start --head), and is this its address?") from err


def _reason(err: BaseException) -> str:
    """The last line of a Ray error (the cause), without the remote traceback above it."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
