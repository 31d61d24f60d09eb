"""``mlaas4hep.Client``: the service from Python (notebooks, scripts) and from the CLI.

One object per service and token::

    from mlaas4hep import Client

    client = Client()                      # URL and token as the CLI finds them
    up = client.upload_dataset(Path("data/signal.root"))   # resumable; not re-sent: up.uri
    job = client.submit("examples/tth-vs-qcd.yaml")
    final = client.wait(job["id"])         # the finished job, metrics in final["progress"]
    print(client.logs(job["id"]).decode())
    client.download(job["id"], "metrics.json", Path("metrics.json"))
    scores = client.predict("tth-classifier", rows)          # V2, binary tensors
    model = client.fetch_model("tth-classifier:3")           # a local bundle directory

Answers are the service's JSON documents (dicts), arrays are numpy. Errors are the
project's exceptions (``AuthError``, ``PermissionDenied``, ``NotFound``, ``SpecError``,
``ServiceError``...) carrying the service's message. The CLI commands are thin layers over
these methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlaas4hep.client import inference, localize, models, uploads
from mlaas4hep.client.http import Transport, resolve
from mlaas4hep.errors import NotFound, SpecError

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
Array = np.ndarray[Any, Any]


class Client(Transport):
    """The job, dataset, model and inference APIs of one service (see the module doc)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url, token = resolve(url, token)
        super().__init__(url, token, transport=transport, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    # ---- jobs ----------------------------------------------------------------------------

    def submit(
        self,
        spec: str | Path | bytes,
        files: Sequence[Path] = (),
        idempotency_key: str | None = None,
        *,
        progress: uploads.Progress | None = None,
        uploaded: Callable[[uploads.Uploaded], None] | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | Sequence[str] = (),
        parent: str | None = None,
    ) -> dict[str, Any]:
        """Queue a pipeline spec or apply request (a path, or the document's bytes).

        A spec given by path has its local input files uploaded first as your datasets
        and named ``dataset:NAME`` (:mod:`mlaas4hep.client.localize`; a job sees only
        those). *files* are small files the job needs (a model module, a file list).
        *run_name*, *tags* (a mapping, or ``KEY=VALUE`` strings) and *parent* (a job id of
        yours) label the run in the runs table. Returns the queued job.
        """
        if isinstance(spec, bytes):
            body = spec
        else:
            path = Path(spec)
            body = localize.with_uploads(
                self, path, _read(path), [f.name for f in files],
                progress=progress, uploaded=uploaded,
            )  # fmt: skip
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        # KEY=VALUE strings as given: the service checks them (one message for every client).
        tag_list = [f"{k}={v}" for k, v in tags.items()] if isinstance(tags, Mapping) else tags
        params: dict[str, Any] = {"tag": list(tag_list)}
        params |= {k: v for k, v in (("run_name", run_name), ("parent", parent)) if v}
        if files:
            parts = [("spec", ("pipeline.yaml", body, "application/yaml"))]
            parts += [("files", (f.name, _read(f), "application/octet-stream")) for f in files]
            r = self.request("POST", "/jobs", files=parts, headers=headers, params=params)
        else:
            headers["Content-Type"] = "application/yaml"
            r = self.request("POST", "/jobs", content=body, headers=headers, params=params)
        return dict(r.json())

    def job(self, job_id: str) -> dict[str, Any]:
        """The job now: state, progress (phase, events, epoch, metrics), reason."""
        return dict(self.request("GET", f"/jobs/{job_id}").json())

    status = job

    def jobs(
        self, states: Sequence[str] = (), limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of the caller's jobs, newest first: ``{"items": [...], "next": ...}``."""
        params: dict[str, Any] = {"limit": limit, "state": list(states)}
        if cursor:
            params["cursor"] = cursor
        return dict(self.request("GET", "/jobs", params=params).json())

    def runs(
        self,
        search: str = "",
        *,
        states: Sequence[str] = (),
        tags: Sequence[str] = (),
        sort: str = "created",
        order: str = "desc",
        limit: int = 100,
    ) -> dict[str, Any]:
        """Your runs with their key parameters and test metrics, filtered and sorted:
        ``{"items": [...], "param_columns": [...], "metric_columns": [...]}``. *sort*:
        ``created``, ``name``, ``state``, ``duration``, ``param:KEY`` or ``metric:KEY``."""
        params: dict[str, Any] = {"search": search, "state": list(states), "tag": list(tags)}
        params |= {"sort": sort, "order": order, "limit": limit}
        return dict(self.request("GET", "/runs", params=params).json())

    def compare_runs(self, job_ids: Sequence[str]) -> dict[str, Any]:
        """2 to 10 runs side by side: parameters, metrics and curves."""
        r = self.request("GET", "/runs/compare", params={"id": list(job_ids)})
        return dict(r.json())

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; return it. *on_update* sees every poll's job.

        Raises ``TimeoutError`` after *timeout* seconds (the job goes on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                msg = f"job {job_id} is still {job['state']} after {timeout} s"
                raise TimeoutError(msg)
            time.sleep(poll)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/jobs/{job_id}/cancel").json())

    def log_stream(self, job_id: str, follow: bool = False) -> Iterator[bytes]:
        """The log bytes as they arrive (``follow`` streams until the job ends)."""
        params = {"follow": "true" if follow else "false"}
        with self.stream("GET", f"/api/v1/jobs/{job_id}/logs", params=params, timeout=None) as r:
            yield from r.iter_bytes()

    def logs(self, job_id: str) -> bytes:
        """The whole log so far."""
        return b"".join(self.log_stream(job_id))

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """A succeeded job's files: ``[{"name", "size"}...]``."""
        return list(self.request("GET", f"/jobs/{job_id}/artifacts").json()["items"])

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        """Save artifact *name* to *dest* (temp file + rename: never half-written)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        path = f"/api/v1/jobs/{job_id}/artifacts/{name}"
        with self.stream("GET", path) as r, tmp.open("wb") as out:
            for chunk in r.iter_bytes():
                out.write(chunk)
        tmp.replace(dest)
        return dest

    # ---- datasets ------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        """The caller's uploaded datasets, newest first."""
        return list(self.request("GET", "/datasets").json()["items"])

    def upload_dataset(
        self, path: Path, name: str | None = None, progress: uploads.Progress | None = None
    ) -> uploads.Uploaded:
        """Upload the ROOT file *path* as ``dataset:NAME``: content-addressed (a file you
        already uploaded is not sent again), resumed where an interrupted upload stopped.

        *name* defaults to the file name (``STEM-HHHHHHHH.SUFFIX`` when you have another
        file of that name). See :mod:`mlaas4hep.client.uploads`.
        """
        return uploads.upload(self, Path(path), name, progress)

    def dataset(self, ref: str) -> dict[str, Any]:
        """Your dataset by id or by name."""
        for item in self.datasets():
            if ref in (item["id"], item["name"]):
                return item
        msg = f"no dataset {ref!r} among yours; `mlaas4hep datasets list` shows them"
        raise NotFound(msg)

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/datasets/{dataset_id}")

    # ---- models --------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """The models the caller may read: ``[{"name", "version", "state", "reason"}...]``."""
        return list(self.call("POST", "/v2/repository/index", json={}).json())

    def model(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A model's V2 metadata: inputs, outputs, versions, feature names, preprocessing."""
        return dict(self.call("GET", inference.model_path(name, version)).json())

    def delete_model(self, name: str) -> None:
        """Delete every version of *name* (needs modify rights on it)."""
        self.call("DELETE", "/delete", params={"model": name})

    def model_registry(self, name: str) -> dict[str, Any]:
        """A model's versions (state, aliases, source job, metrics), aliases and policy."""
        return dict(self.call("GET", f"/v2/repository/models/{name}/registry").json())

    def promote(self, name: str, version: int, alias: str) -> dict[str, Any]:
        """Point *alias* at *version* (served once this returns): ``{previous, version}``."""
        path = f"/v2/repository/models/{name}/aliases/{alias}"
        return dict(self.call("PUT", path, json={"version": version}).json())

    def rollback(self, name: str, alias: str) -> dict[str, Any]:
        """Move *alias* back to the version it pointed to before its last promotion."""
        path = f"/v2/repository/models/{name}/aliases/{alias}/rollback"
        return dict(self.call("POST", path).json())

    def set_serving_policy(self, name: str, policy: str) -> dict[str, Any]:
        """Which versions are loaded (``latest[:N]``, ``all``, ``aliased``, ``versions:1,3``)."""
        path = f"/v2/repository/models/{name}/policy"
        return dict(self.call("PUT", path, json={"policy": policy}).json())

    def fetch_model(self, ref: str, cache: Path | None = None) -> Path:
        """Download ``NAME[:VERSION]``'s bundle; return its local directory (what
        ``mlaas4hep.Model.load`` and ``mlaas4hep apply`` read)."""
        return models.fetch(self, ref, cache)

    def predict(
        self, name: str, rows: Array | Mapping[str, Array], version: str | None = None
    ) -> dict[str, Array]:
        """Score *rows* with a served model over V2 (binary tensors).

        *rows* is a matrix in the model's feature order, or a mapping feature -> column
        (ordered by the model's ``feature_names``). Returns the outputs by name.
        """
        path = inference.model_path(name, version)
        meta = self.model(name, version)
        tensor = meta["inputs"][0]
        if isinstance(rows, Mapping):
            features = list((meta.get("parameters") or {}).get("feature_names") or [])
            missing = [f for f in features if f not in rows]
            if not features or missing:
                msg = (
                    f"model {name!r} needs the columns {features[:8]}...; missing {missing[:8]}"
                    if features
                    else f"model {name!r} declares no feature names; pass a matrix"
                )
                raise SpecError(msg)
            matrix = np.column_stack([np.asarray(rows[f]) for f in features])
        else:
            matrix = np.asarray(rows)
            if matrix.ndim == 1:
                matrix = matrix.reshape(1, -1)
        matrix = matrix.astype(inference.dtype_of(tensor), copy=False)
        _, outputs = inference.infer(self, path, {tensor["name"]: (tensor["datatype"], matrix)})
        return outputs

    def apply(
        self,
        model: str,
        files: Sequence[str],
        *,
        name: str | None = None,
        format: str = "root",
        only_passing: bool = False,
        register_dataset: bool = False,
    ) -> dict[str, Any]:
        """Queue an apply job: *model* (``NAME[:VERSION]``) on *files* (what a spec
        accepts: ``dataset:NAME``, ``root://``, ...). Returns the queued job."""
        import json

        request = {
            "name": name or f"apply-{model.replace(':', '-')}",
            "apply": {
                "model": model,
                "files": list(files),
                "format": format,
                "only_passing": only_passing,
                "register_dataset": register_dataset,
            },
        }
        return self.submit(json.dumps(request).encode())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        msg = f"cannot read {str(path)!r}: {exc.strerror}"
        raise SpecError(msg) from exc
