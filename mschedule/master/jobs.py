"""Jobs: named scripts with default task parameters, every save an immutable numbered version."""
from __future__ import annotations

import difflib
import hashlib
import time
from typing import Any

from mschedule.master.storage import Storage
from mschedule.utils.defaults import DEFAULT_MAX_TARGETS
from mschedule.utils.exceptions import NotFound, ValidationError
from mschedule.utils.messages import b64encode
from mschedule.utils.params import resolve_params, validate_declarations
from mschedule.utils.taskspec import TaskSpec
from mschedule.utils.validate import utf8

#: task parameters a job keeps beside its script; ``params`` is its parameter declarations
JOB_PARAMS = ("timeout", "parallel", "fail_rate", "fail_count", "targets", "selector", "batch_by", "batch_order",
              "notify", "params")
#: what a run may give besides ``version`` and the values of the declared ``params``
RUN_OVERRIDES = tuple(k for k in JOB_PARAMS if k != "params")


def validate_job_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError("name: empty", field="name")
    if "/" in name:
        raise ValidationError("name: may not contain '/'", field="name")
    if len(name) > 100:
        raise ValidationError(f"name: {len(name)} characters, more than 100", field="name")
    return utf8(name, "name")


def _params(spec: TaskSpec, declarations: list[dict]) -> dict:
    return {"timeout": spec.timeout, "parallel": spec.parallel, "fail_rate": spec.fail_rate,
            "fail_count": spec.fail_count, "targets": list(spec.targets), "selector": spec.selector,
            "batch_by": spec.batch_by, "batch_order": spec.batch_order, "notify": spec.notify,
            "params": declarations}


class Jobs:
    """Versions live in ``storage.jobs[name]`` (a list, version n at index n-1), written through."""

    def __init__(self, storage: Storage, max_script_bytes: int, max_targets: int = DEFAULT_MAX_TARGETS) -> None:
        self.storage = storage
        self.max_script_bytes = max_script_bytes
        self.max_targets = max_targets

    def _spec(self, fields: dict, require_targets: bool = True) -> TaskSpec:
        return TaskSpec.from_request(fields, max_script_bytes=self.max_script_bytes, max_targets=self.max_targets,
                                     require_targets=require_targets)

    def save(self, name: Any, body: Any) -> dict:
        """A new version from ``{script (text), message?, <task parameters>}``; an identical save makes none."""
        name = validate_job_name(name)
        if not isinstance(body, dict):
            raise ValidationError("body: expected an object with script and task parameters", field="body")
        message = body.get("message")
        if message is not None:
            if not isinstance(message, str):
                raise ValidationError("message: expected a string", field="message")
            utf8(message, "message")
        if "env" in body:
            raise ValidationError("env: a job declares params instead (each run gives their values)", field="env")
        fields = {k: v for k, v in body.items() if k not in ("message", "params")}
        spec = self._spec(fields, require_targets=False)
        versions = self.storage.jobs.get(name, [])
        digest = hashlib.sha256(spec.script).hexdigest()
        params = _params(spec, validate_declarations(body.get("params")))
        if versions and versions[-1]["sha256"] == digest and versions[-1]["params"] == params:
            return {"name": name, "version": versions[-1]["version"], "created": False,
                    "note": f"identical to version {versions[-1]['version']}: no new version"}
        version = {"name": name, "version": len(versions) + 1, "created_at": time.time(), "message": message or "",
                   "sha256": digest, "script": spec.script, "params": params}
        self.storage.save_job_version(version)
        return {"name": name, "version": version["version"], "created": True}

    def _versions(self, name: Any) -> list[dict]:
        versions = self.storage.jobs.get(validate_job_name(name))
        if not versions:
            raise NotFound(f"job {name!r} not found", field="name")
        return versions

    def _version(self, name: Any, version: Any = None) -> dict:
        """The stored version (its script as bytes); the latest for None."""
        versions = self._versions(name)
        if version is None:
            return versions[-1]
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= len(versions):
            raise NotFound(f"job {name!r} has no version {version!r} (1..{len(versions)})", field="version")
        return versions[version - 1]

    def get(self, name: Any, version: Any = None) -> dict:
        found = self._version(name, version)
        return {**self.meta(found), "script": b64encode(found["script"]), "params": found["params"]}

    @staticmethod
    def meta(version: dict) -> dict:
        return {k: version[k] for k in ("name", "version", "created_at", "message", "sha256")}

    def versions(self, name: Any) -> list[dict]:
        return [self.meta(v) for v in self._versions(name)]

    def list(self) -> list[dict]:
        return [self.meta(versions[-1]) for _, versions in sorted(self.storage.jobs.items()) if versions]

    def diff(self, name: Any, old: Any, new: Any) -> dict:
        a, b = self.get(name, old), self.get(name, new)
        versions = self._versions(name)
        script_a = versions[a["version"] - 1]["script"].decode("utf-8", "replace").splitlines(keepends=True)
        script_b = versions[b["version"] - 1]["script"].decode("utf-8", "replace").splitlines(keepends=True)
        diff = "".join(difflib.unified_diff(script_a, script_b, f"{name} v{a['version']}", f"{name} v{b['version']}"))
        changed = [{"param": k, "from": a["params"].get(k), "to": b["params"].get(k)}
                   for k in JOB_PARAMS if a["params"].get(k) != b["params"].get(k)]
        return {"name": name, "from": a["version"], "to": b["version"], "script_diff": diff, "params": changed}

    def rollback(self, name: Any, version: Any) -> dict:
        """A new version equal to ``version``."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValidationError("version: expected a version number", field="version")
        old = self._version(name, version)
        return self.save(name, {"script": old["script"], "message": f"rollback to version {old['version']}",
                                **{k: v for k, v in old["params"].items() if v not in (None, [])}})

    def spec_for_run(self, name: Any, body: Any) -> tuple[TaskSpec, int]:
        """The task a run of the job makes: its parameters, overridden by the request's, and the values of its
        declared ``params`` (checked against their declarations) as the script's environment."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValidationError("body: expected an object", field="body")
        job = self._version(name, body.get("version"))
        overrides = {k: v for k, v in body.items() if k not in ("version", "params")}
        unknown = sorted(set(overrides) - set(RUN_OVERRIDES))
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: version, params, {', '.join(RUN_OVERRIDES)})",
                                  field=unknown[0])
        saved = {k: v for k, v in job["params"].items() if v not in (None, []) and k != "params"}
        spec = self._spec({**saved, **overrides, "script": job["script"]})
        spec.env, spec.secrets = resolve_params(job["params"].get("params", []), body.get("params"))
        spec.params = list(spec.env)
        return spec, job["version"]

    def declarations(self, name: Any, version: Any = None) -> list[dict]:
        """The parameters version ``version`` (the latest for None) of job ``name`` declares.

        Raises:
            NotFound: no such job or version (``field`` says which).
        """
        return self._version(name, version)["params"].get("params", [])
