"""A fake Amazon ECS, with the slice of CloudWatch Logs its task logs need: a real HTTP server on 127.0.0.1.

Only the server is fake: tests point boto3 (through the Airflow AWS connection's ``endpoint_url``) at it
and drive the Amazon provider's real ``EcsRunTaskOperator``. Both services speak the AWS JSON 1.1
protocol on one port: ``POST /`` with ``X-Amz-Target: <prefix>.<Operation>``, a JSON body, answered
with ``application/x-amz-json-1.1``; errors are ``{"__type": <code>, "message": ...}`` with HTTP 400
(``ServerException``: 500). Shapes follow the ECS and CloudWatch Logs API references; every answer is
checked against botocore's service model before it is sent (a key the model does not know, or a wrong
type, is a bug of the fake and answers 500), so boto3 never silently drops a misspelt field.

ECS (``AmazonEC2ContainerServiceV20141113``) — what the provider's operator, hook and waiter call:

* ``RunTask`` — validates the cluster (``ClusterNotFoundException``), the task definition (family,
  ``family:revision`` or ARN; ``ClientException``), that every ``overrides.containerOverrides[].name``
  is a container of it, that ``awsvpc`` tasks (every FARGATE task) carry a
  ``networkConfiguration.awsvpcConfiguration`` with subnets, and ``startedBy`` (at most 128 characters)
  (``InvalidParameterException``). Starts ``count`` tasks (``PENDING``, desired ``RUNNING``) and answers
  ``{"tasks": [Task], "failures": []}``.
* The task's container really runs: ``entryPoint`` + ``command`` (the override's, else the task
  definition's) as a local subprocess, its environment the minimal base (``PATH``, ``HOME``, ``LANG``,
  ``TMPDIR`` of this process, unless :attr:`FakeEcs.inherit_environment`) updated with the container
  definition's ``environment`` and then the override's, in its ``workingDirectory``. After
  :attr:`FakeEcs.pending_seconds` the task is ``RUNNING`` (``startedAt``); when the process exits it is
  ``STOPPED`` with ``stopCode: EssentialContainerExited``, ``stoppedReason: "Essential container in
  task exited"`` and ``containers[].exitCode`` = the exit status (a signal N: 128 + N, as Docker
  reports it). An executable not on the container's ``PATH`` stops the task with ``stopCode:
  TaskFailedToStart`` and a ``CannotStartContainerError`` reason, without an exit code.
* ``DescribeTasks`` — ids or ARNs; unknown ones in ``failures`` with reason ``MISSING``.
* ``StopTask`` — desired ``STOPPED``, ``stopCode: UserInitiated``, ``stoppedReason`` = the reason; the
  process group gets SIGTERM, then SIGKILL after the container's ``stopTimeout`` (default
  :attr:`FakeEcs.stop_timeout`).
* ``ListTasks`` — by ``startedBy``, ``family``, ``launchType`` and ``desiredStatus`` (default
  ``RUNNING``, as ECS), paged by ``maxResults`` / ``nextToken`` (what ``reattach=True`` calls).
* ``DescribeTaskDefinition`` and ``RegisterTaskDefinition`` (one container per definition).

CloudWatch Logs (``Logs_20140328``): a container whose definition has an ``awslogs`` log configuration
writes each line of its output (stdout and stderr together) as an event of stream
``<awslogs-stream-prefix>/<container>/<task id>`` in its ``awslogs-group``, as the awslogs driver does.

* ``GetLogEvents`` — ``startFromHead``, ``limit``, ``startTime`` / ``endTime`` and the forward and
  backward tokens; at the end of a stream ``nextForwardToken`` is the token that was passed in (which
  is how ``AwsLogsHook.get_log_events`` knows to stop). ``ResourceNotFoundException`` for an unknown
  group or stream.
* ``FilterLogEvents`` — streams by name or prefix, time range, a filter pattern of plain terms (all
  must occur), ``limit`` / ``nextToken``.

:attr:`FakeEcs.calls` records every request (operation, body, and the region and access key of its
SigV4 credential scope); :meth:`FakeEcs.run_task_calls` the RunTask bodies.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOGGER = logging.getLogger(__name__)

ECS_TARGET = "AmazonEC2ContainerServiceV20141113"
LOGS_TARGET = "Logs_20140328"
CONTENT_TYPE = "application/x-amz-json-1.1"
_CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


class ApiError(Exception):
    """An AWS error answer: its ``__type`` code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class ContainerDefinition:
    """One container of a task definition; ``log_group`` set = the awslogs log driver."""

    name: str
    image: str = "lcms:test"
    command: list[str] = field(default_factory=list)
    entry_point: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    stop_timeout: float | None = None
    log_group: str | None = None
    log_stream_prefix: str | None = None

    def to_api(self, region: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "image": self.image, "essential": True}
        if self.command:
            out["command"] = list(self.command)
        if self.entry_point:
            out["entryPoint"] = list(self.entry_point)
        if self.environment:
            out["environment"] = [{"name": k, "value": v} for k, v in sorted(self.environment.items())]
        if self.working_directory:
            out["workingDirectory"] = self.working_directory
        if self.stop_timeout is not None:
            out["stopTimeout"] = int(self.stop_timeout)
        if self.log_group:
            options = {"awslogs-group": self.log_group, "awslogs-region": region}
            if self.log_stream_prefix:
                options["awslogs-stream-prefix"] = self.log_stream_prefix
            out["logConfiguration"] = {"logDriver": "awslogs", "options": options}
        return out

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ContainerDefinition:
        log = data.get("logConfiguration") or {}
        options = (log.get("options") or {}) if log.get("logDriver") == "awslogs" else {}
        return cls(
            name=data["name"],
            image=data.get("image", "lcms:test"),
            command=list(data.get("command") or []),
            entry_point=list(data.get("entryPoint") or []),
            environment={e["name"]: e["value"] for e in data.get("environment") or []},
            working_directory=data.get("workingDirectory"),
            stop_timeout=data.get("stopTimeout"),
            log_group=options.get("awslogs-group"),
            log_stream_prefix=options.get("awslogs-stream-prefix"),
        )


@dataclass
class TaskDefinition:
    family: str
    container: ContainerDefinition
    revision: int = 1
    network_mode: str = "awsvpc"
    requires_compatibilities: tuple[str, ...] = ("FARGATE",)
    cpu: str = "1024"
    memory: str = "2048"
    registered_at: float = field(default_factory=time.time)


@dataclass
class RecordedCall:
    """One request: the operation (``RunTask``, ``GetLogEvents``, ...), its JSON body, its credential scope."""

    operation: str
    body: dict[str, Any]
    region: str | None = None
    access_key: str | None = None
    service: str | None = None


@dataclass
class _Task:
    arn: str
    cluster: str
    definition: TaskDefinition
    overrides: dict[str, Any]
    started_by: str | None
    group: str
    launch_type: str | None
    subnet: str | None
    created_at: float
    container_arn: str
    last_status: str = "PENDING"
    desired_status: str = "RUNNING"
    started_at: float | None = None
    stopping_at: float | None = None
    stopped_at: float | None = None
    stop_code: str | None = None
    stopped_reason: str | None = None
    exit_code: int | None = None
    container_reason: str | None = None
    version: int = 1
    argv: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]


@dataclass
class FakeEcs:
    """The server's state; use as a context manager (``with FakeEcs() as ecs:``)."""

    region: str = "eu-central-1"
    account_id: str = "123456789012"
    clusters: set[str] = field(default_factory=lambda: {"default"})
    pending_seconds: float = 0.0
    stop_timeout: float = 2.0
    inherit_environment: bool = False
    calls: list[RecordedCall] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._definitions: dict[str, list[TaskDefinition]] = {}
        self._tasks: dict[str, _Task] = {}
        self._logs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake ECS is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeEcs:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-ecs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the server and every task still running (their processes are killed)."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.last_status != "STOPPED"]
        for task in tasks:
            self._request_stop(task, "UserInitiated", "The fake ECS server shut down")
        for thread in list(self._threads):
            thread.join(timeout=self.stop_timeout + 5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeEcs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ set-up and inspection

    def add_task_definition(self, definition: TaskDefinition) -> str:
        """Register ``definition`` (as the next revision of its family); returns its ARN."""
        with self._lock:
            revisions = self._definitions.setdefault(definition.family, [])
            definition.revision = len(revisions) + 1
            revisions.append(definition)
            return self._definition_arn(definition)

    def run_task_calls(self) -> list[dict[str, Any]]:
        """The bodies of every RunTask request received."""
        with self._lock:
            return [c.body for c in self.calls if c.operation == "RunTask"]

    def task(self, task: str) -> dict[str, Any]:
        """A task (id or ARN) as DescribeTasks describes it."""
        with self._lock:
            return self._describe(self._find(task))

    def tasks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._describe(t) for t in self._tasks.values()]

    def task_environment(self, task: str) -> dict[str, str]:
        """The environment the task's process was started with."""
        with self._lock:
            return dict(self._find(task).environment)

    def log_messages(self, group: str, stream: str) -> list[str]:
        with self._lock:
            return [e["message"] for e in self._logs.get(group, {}).get(stream, [])]

    def wait_for_status(self, task: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the task (id or ARN) reaches ``status``; its description."""
        deadline = time.monotonic() + timeout
        while True:
            described = self.task(task)
            if described["lastStatus"] == status:
                return described
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task} is {described['lastStatus']}, not {status}, after {timeout} s")
            time.sleep(0.02)

    # ------------------------------------------------------------------------------------ dispatch

    def handle(self, target: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        prefix, _, operation = target.partition(".")
        match = _CREDENTIAL.search(headers.get("authorization", ""))
        call = RecordedCall(operation, body, *((match.group(2), match.group(1), match.group(3)) if match else ()))
        with self._lock:
            self.calls.append(call)
            self.counts[operation] += 1
        if match is None:
            raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token")
        service = {ECS_TARGET: "ecs", LOGS_TARGET: "logs"}.get(prefix)
        method = getattr(self, f"_{service}_{_snake(operation)}", None) if service else None
        if method is None:
            raise ApiError("UnknownOperationException", f"{target} is not an operation of the fake")
        result: dict[str, Any] = method(body)
        _check_answer(service or "", operation, result)
        return result

    # ------------------------------------------------------------------------------------ ECS

    def _ecs_run_task(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        definition = self._definition(body["taskDefinition"])
        overrides = body.get("overrides") or {}
        for override in overrides.get("containerOverrides") or []:
            if override.get("name") != definition.container.name:
                raise ApiError(
                    "InvalidParameterException",
                    f"Override for container named {override.get('name')} is not a container in the TaskDefinition.",
                )
        launch_type = body.get("launchType")
        if launch_type and launch_type not in (*definition.requires_compatibilities, "EC2"):
            raise ApiError(
                "InvalidParameterException",
                f"Task definition does not support launch_type {launch_type}.",
            )
        subnet = None
        if definition.network_mode == "awsvpc":
            vpc = (body.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
            if not vpc:
                raise ApiError(
                    "InvalidParameterException",
                    "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
                )
            if not vpc.get("subnets"):
                raise ApiError("InvalidParameterException", "subnets can not be empty.")
            subnet = vpc["subnets"][0]
        started_by = body.get("startedBy")
        if started_by is not None and not 0 < len(started_by) <= 128:
            raise ApiError("InvalidParameterException", "startedBy must be 1 to 128 characters long.")
        count = int(body.get("count", 1))
        if not 1 <= count <= 10:
            raise ApiError("InvalidParameterException", "count must be between 1 and 10.")
        tasks = []
        with self._lock:
            for _ in range(count):
                task_id = uuid.uuid4().hex
                task = _Task(
                    arn=f"arn:aws:ecs:{self.region}:{self.account_id}:task/{cluster}/{task_id}",
                    cluster=cluster,
                    definition=definition,
                    overrides=overrides,
                    started_by=started_by,
                    group=body.get("group") or f"family:{definition.family}",
                    launch_type=launch_type,
                    subnet=subnet,
                    created_at=time.time(),
                    container_arn=f"arn:aws:ecs:{self.region}:{self.account_id}:container/{cluster}/{task_id}/"
                    + str(uuid.uuid4()),
                )
                self._tasks[task.arn] = task
                tasks.append(task)
                thread = threading.Thread(target=self._execute, args=(task,), name=f"fake-ecs-{task_id}", daemon=True)
                self._threads.append(thread)
                thread.start()
            return {"tasks": [self._describe(t) for t in tasks], "failures": []}

    def _ecs_describe_tasks(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        tasks, failures = [], []
        with self._lock:
            for ref in body.get("tasks") or []:
                task = self._lookup(ref)
                if task is None or task.cluster != cluster:
                    failures.append({"arn": ref, "reason": "MISSING"})
                else:
                    tasks.append(self._describe(task))
        return {"tasks": tasks, "failures": failures}

    def _ecs_stop_task(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        task = self._lookup(body["task"])
        if task is None or task.cluster != cluster:
            raise ApiError("InvalidParameterException", "The referenced task was not found.")
        self._request_stop(task, "UserInitiated", body.get("reason") or "Task stopped by user")
        with self._lock:
            return {"task": self._describe(task)}

    def _ecs_list_tasks(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(body.get("cluster"))
        desired = body.get("desiredStatus") or "RUNNING"
        with self._lock:
            arns = [
                t.arn
                for t in self._tasks.values()
                if t.cluster == cluster
                and t.desired_status == desired
                and (body.get("startedBy") is None or t.started_by == body["startedBy"])
                and (body.get("family") is None or t.definition.family == body["family"])
                and (body.get("launchType") is None or t.launch_type == body["launchType"])
            ]
        start = int(body.get("nextToken") or 0)
        size = int(body.get("maxResults") or 100)
        page: dict[str, Any] = {"taskArns": arns[start : start + size]}
        if start + size < len(arns):
            page["nextToken"] = str(start + size)
        return page

    def _ecs_describe_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        definition = self._definition(body["taskDefinition"])
        return {"taskDefinition": self._describe_definition(definition)}

    def _ecs_register_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        containers = body.get("containerDefinitions") or []
        if len(containers) != 1:
            raise ApiError("ClientException", "The fake ECS runs task definitions of exactly one container.")
        definition = TaskDefinition(
            family=body["family"],
            container=ContainerDefinition.from_api(containers[0]),
            network_mode=body.get("networkMode") or "bridge",
            requires_compatibilities=tuple(body.get("requiresCompatibilities") or ("EC2",)),
            cpu=body.get("cpu") or "1024",
            memory=body.get("memory") or "2048",
        )
        self.add_task_definition(definition)
        return {"taskDefinition": self._describe_definition(definition)}

    # ------------------------------------------------------------------------------------ task execution

    def _execute(self, task: _Task) -> None:
        """The task's life: PENDING, the container's process (RUNNING), STOPPED with its exit code."""
        container = task.definition.container
        override = next(iter(task.overrides.get("containerOverrides") or []), {})
        argv = container.entry_point + list(override.get("command") or container.command)
        env = dict(os.environ) if self.inherit_environment else _base_environment()
        env.update(container.environment)
        env.update({e["name"]: e["value"] for e in override.get("environment") or []})
        with self._lock:
            task.argv, task.environment = argv, env
        if task.stop_requested.wait(self.pending_seconds):
            self._finish(task, None)
            return
        executable = shutil.which(argv[0], path=env.get("PATH")) if argv else None
        if executable is None:
            reason = (
                "CannotStartContainerError: Error response from daemon: failed to create task for container: "
                f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH: unknown'
            )
            with self._lock:
                task.container_reason = reason
                task.stop_code, task.stopped_reason = "TaskFailedToStart", reason
            self._finish(task, None)
            return
        stream = self._open_log_stream(task)
        with self._lock:
            if task.stop_requested.is_set():
                self._finish(task, None)
                return
            # The fake's whole point: the task's command really runs.
            task.process = subprocess.Popen(
                [executable, *argv[1:]],
                env=env,
                cwd=container.working_directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            task.last_status, task.started_at = "RUNNING", time.time()
            task.version += 1
        process = task.process
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                if stream is not None:
                    self._append_log(*stream, raw.decode(errors="replace").rstrip("\r\n"))
        status = process.wait()
        self._finish(task, 128 - status if status < 0 else status)

    def _finish(self, task: _Task, exit_code: int | None) -> None:
        with self._lock:
            now = time.time()
            task.exit_code = exit_code
            if task.stop_code is None:
                task.stop_code, task.stopped_reason = "EssentialContainerExited", "Essential container in task exited"
            task.stopping_at = task.stopping_at or now
            task.stopped_at = now
            task.last_status = task.desired_status = "STOPPED"
            task.version += 1

    def _request_stop(self, task: _Task, code: str, reason: str) -> None:
        with self._lock:
            if task.last_status == "STOPPED" or task.stop_requested.is_set():
                return
            task.stop_requested.set()
            task.desired_status = "STOPPED"
            task.stop_code, task.stopped_reason = code, reason
            task.stopping_at = time.time()
            task.version += 1
            process = task.process
            timeout = task.definition.container.stop_timeout
        if process is not None:
            threading.Thread(
                target=_terminate, args=(process, self.stop_timeout if timeout is None else timeout), daemon=True
            ).start()

    # ------------------------------------------------------------------------------------ CloudWatch Logs

    def _open_log_stream(self, task: _Task) -> tuple[str, str] | None:
        container = task.definition.container
        if not container.log_group:
            return None
        name = f"{container.name}/{task.id}"
        if container.log_stream_prefix:
            name = f"{container.log_stream_prefix}/{name}"
        with self._lock:
            self._logs.setdefault(container.log_group, {}).setdefault(name, [])
        return container.log_group, name

    def _append_log(self, group: str, stream: str, message: str) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._logs[group][stream].append({"timestamp": now, "message": message, "ingestionTime": now})

    def _stream(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        group = self._logs.get(body.get("logGroupName") or body.get("logGroupIdentifier") or "")
        if group is None:
            raise ApiError("ResourceNotFoundException", "The specified log group does not exist.")
        stream = group.get(body.get("logStreamName") or "")
        if stream is None:
            raise ApiError("ResourceNotFoundException", "The specified log stream does not exist.")
        return list(stream)

    def _logs_get_log_events(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            events = self._stream(body)
        start, end = body.get("startTime"), body.get("endTime")
        candidates = [
            i
            for i, e in enumerate(events)
            if (start is None or e["timestamp"] >= start) and (end is None or e["timestamp"] < end)
        ]
        limit = min(int(body.get("limit") or 10000), 10000)
        token = body.get("nextToken")
        if token:
            try:
                direction, position = token[0], int(token[2:])
            except ValueError:
                raise ApiError("InvalidParameterException", "The specified nextToken is invalid.") from None
        elif body.get("startFromHead"):
            direction, position = "f", 0
        else:
            direction, position = "b", len(events)
        if direction == "f":
            chosen = [i for i in candidates if i >= position][:limit]
        else:
            chosen = [i for i in candidates if i < position][-limit:]
        return {
            "events": [events[i] for i in chosen],
            "nextForwardToken": f"f/{chosen[-1] + 1 if chosen else position:020d}",
            "nextBackwardToken": f"b/{chosen[0] if chosen else position:020d}",
        }

    def _logs_filter_log_events(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            group = self._logs.get(body.get("logGroupName") or body.get("logGroupIdentifier") or "")
            if group is None:
                raise ApiError("ResourceNotFoundException", "The specified log group does not exist.")
            names = body.get("logStreamNames")
            prefix = body.get("logStreamNamePrefix") or ""
            streams = {n: list(ev) for n, ev in group.items() if (names is None or n in names) and n.startswith(prefix)}
        terms = [t.strip('"') for t in re.findall(r'"[^"]*"|\S+', body.get("filterPattern") or "")]
        start, end = body.get("startTime"), body.get("endTime")
        matched = sorted(
            (
                {**e, "logStreamName": name, "eventId": f"{name}:{i}"}
                for name, events in streams.items()
                for i, e in enumerate(events)
                if (start is None or e["timestamp"] >= start)
                and (end is None or e["timestamp"] <= end)
                and all(t in e["message"] for t in terms)
            ),
            key=lambda e: (e["timestamp"], e["eventId"]),
        )
        offset = int(body.get("nextToken") or 0)
        limit = min(int(body.get("limit") or 10000), 10000)
        out: dict[str, Any] = {
            "events": matched[offset : offset + limit],
            "searchedLogStreams": [{"logStreamName": n, "searchedCompletely": True} for n in streams],
        }
        if offset + limit < len(matched):
            out["nextToken"] = str(offset + limit)
        return out

    # ------------------------------------------------------------------------------------ helpers

    def _cluster(self, ref: str | None) -> str:
        name = (ref or "default").rsplit("/", 1)[-1]
        if name not in self.clusters:
            raise ApiError("ClusterNotFoundException", "Cluster not found.")
        return name

    def _definition(self, ref: str) -> TaskDefinition:
        family, _, revision = ref.rsplit("/", 1)[-1].partition(":")
        with self._lock:
            revisions = self._definitions.get(family) or []
            try:
                return revisions[int(revision) - 1] if revision else revisions[-1]
            except (IndexError, ValueError):
                raise ApiError("ClientException", "TaskDefinition not found.") from None

    def _lookup(self, ref: str) -> _Task | None:
        with self._lock:
            if ref in self._tasks:
                return self._tasks[ref]
            return next((t for t in self._tasks.values() if t.id == ref), None)

    def _find(self, ref: str) -> _Task:
        task = self._lookup(ref)
        if task is None:
            raise KeyError(f"the fake ECS has no task {ref}")
        return task

    def _definition_arn(self, definition: TaskDefinition) -> str:
        return f"arn:aws:ecs:{self.region}:{self.account_id}:task-definition/{definition.family}:{definition.revision}"

    def _describe_definition(self, definition: TaskDefinition) -> dict[str, Any]:
        return {
            "taskDefinitionArn": self._definition_arn(definition),
            "family": definition.family,
            "revision": definition.revision,
            "status": "ACTIVE",
            "networkMode": definition.network_mode,
            "containerDefinitions": [definition.container.to_api(self.region)],
            "requiresCompatibilities": list(definition.requires_compatibilities),
            "compatibilities": sorted({"EC2", *definition.requires_compatibilities}),
            "cpu": definition.cpu,
            "memory": definition.memory,
            "registeredAt": definition.registered_at,
        }

    def _describe(self, task: _Task) -> dict[str, Any]:
        container: dict[str, Any] = {
            "containerArn": task.container_arn,
            "taskArn": task.arn,
            "name": task.definition.container.name,
            "image": task.definition.container.image,
            "lastStatus": task.last_status,
            "networkInterfaces": [],
            "healthStatus": "UNKNOWN",
            "cpu": "0",
        }
        if task.process is not None:
            container["runtimeId"] = f"{task.id}-{task.process.pid}"
        if task.exit_code is not None:
            container["exitCode"] = task.exit_code
        if task.container_reason:
            container["reason"] = task.container_reason
        out: dict[str, Any] = {
            "taskArn": task.arn,
            "clusterArn": f"arn:aws:ecs:{self.region}:{self.account_id}:cluster/{task.cluster}",
            "taskDefinitionArn": self._definition_arn(task.definition),
            "overrides": {"containerOverrides": [], **task.overrides},
            "lastStatus": task.last_status,
            "desiredStatus": task.desired_status,
            "cpu": task.definition.cpu,
            "memory": task.definition.memory,
            "containers": [container],
            "version": task.version,
            "createdAt": task.created_at,
            "group": task.group,
            "availabilityZone": f"{self.region}a",
            "healthStatus": "UNKNOWN",
            "tags": [],
            "attachments": [],
        }
        if task.subnet:
            out["attachments"] = [
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, task.arn)),
                    "type": "ElasticNetworkInterface",
                    "status": "ATTACHED" if task.last_status == "RUNNING" else "PRECREATED",
                    "details": [{"name": "subnetId", "value": task.subnet}],
                }
            ]
        if task.launch_type:
            out["launchType"] = task.launch_type
            if task.launch_type == "FARGATE":
                out["platformVersion"] = "1.4.0"
                out["platformFamily"] = "Linux"
        optional = {
            "startedBy": task.started_by,
            "startedAt": task.started_at,
            "stoppingAt": task.stopping_at,
            "stoppedAt": task.stopped_at,
            "executionStoppedAt": task.stopped_at,
            "stopCode": task.stop_code,
            "stoppedReason": task.stopped_reason,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


def _base_environment() -> dict[str, str]:
    """What a container has without the task definition: a PATH, a home, a locale, a temp folder."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds (``docker stop``)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


_MODELS: dict[str, Any] = {}


def _check_answer(service: str, operation: str, answer: dict[str, Any]) -> None:
    """Raise if ``answer`` has a key or a type that botocore's output shape of ``operation`` lacks."""
    import botocore.session

    if service not in _MODELS:
        _MODELS[service] = botocore.session.get_session().get_service_model(service)
    shape = _MODELS[service].operation_model(operation).output_shape
    problems: list[str] = []
    _check_value(answer, shape, operation, problems)
    if problems:
        raise AssertionError(f"the fake's {operation} answer does not fit the API: " + "; ".join(problems))


def _check_value(value: Any, shape: Any, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: {type(value).__name__}, not an object")
            return
        for key, item in value.items():
            if key not in shape.members:
                problems.append(f"{path}.{key}: not a member of {shape.name}")
            else:
                _check_value(item, shape.members[key], f"{path}.{key}", problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: not a list")
            return
        for i, item in enumerate(value):
            _check_value(item, shape.member, f"{path}[{i}]", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: not a map")
    else:
        expected: dict[str, tuple[type, ...]] = {
            "string": (str,),
            "integer": (int,),
            "long": (int,),
            "boolean": (bool,),
            "timestamp": (int, float),
            "double": (int, float),
            "float": (int, float),
        }
        types = expected.get(kind)
        if types and (not isinstance(value, types) or (kind != "boolean" and isinstance(value, bool))):
            problems.append(f"{path}: {value!r} is not a {kind}")


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`FakeEcs` set as the class attribute ``fake``."""

    fake: FakeEcs
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        LOGGER.debug("fake ecs: " + format, *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Date", dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ApiError("SerializationException", "the body must be a JSON object")
            self._send(200, self.fake.handle(headers.get("x-amz-target", ""), body, headers))
        except json.JSONDecodeError as err:
            self._send(400, {"__type": "SerializationException", "message": str(err)})
        except ApiError as err:
            self._send(err.status, {"__type": err.code, "message": err.message})
        except Exception as err:  # a bug of the fake: say so loudly rather than hang the client
            LOGGER.exception("fake ecs: %s failed", headers.get("x-amz-target"))
            self._send(500, {"__type": "ServerException", "message": f"{type(err).__name__}: {err}"})
