"""The operator of the ECS tile runner: the Amazon provider's ``EcsRunTaskOperator``, failing like ``lcms run``.

When the task's container stops with a non-zero exit status, the provider raises "This task is not in
success state" with either the whole task description or, when CloudWatch logs are fetched, only the
last log lines. This subclass replaces that with one message naming the ECS task, the ``lcms run``
command, the stop code and reason, the container's exit code and what it means, then the last log
lines; and, as :func:`lcms_airflow.tile_runners.permanent_failure` does for batches run in the worker,
an exit status that says "bad input" (2: config, options, parameters or a missing upstream) fails the
Airflow task without retries, since a retry would fail the same way. Everything else (starting,
reattaching, waiting, stopping the task on kill) is the provider's.

Imported only when ``LCMS_TILE_RUNNER=ecs`` (it pulls in boto3).
"""

from __future__ import annotations

import shlex
from typing import Any

from airflow.providers.amazon.aws.exceptions import EcsTaskFailToStart
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

#: What ``lcms run`` exit statuses mean (``lcms_tasks.cli``), and the usual signals of a container.
EXIT_MEANINGS = {
    1: "some tiles failed (each recorded under <stage>/_run/failures/)",
    2: "bad input: config, options, parameters or a missing upstream; not retried",
    137: "killed (SIGKILL; out of memory?)",
    143: "terminated (SIGTERM; the task was stopped)",
}
#: Exit statuses a retry cannot fix.
PERMANENT_EXIT_CODES = frozenset({2})


class LcmsEcsRunTaskOperator(EcsRunTaskOperator):
    """``EcsRunTaskOperator`` whose failures name the exit code and command; exit 2 is not retried."""

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSkipException:
            raise
        except (AirflowException, EcsTaskFailToStart) as err:
            failure = self._container_failure()
            if failure is None:
                raise
            raise failure from err

    def _container_failure(self) -> AirflowException | None:
        """The failure of the stopped task's container, or None if the task did not stop with one."""
        if not self.arn:
            return None
        try:
            tasks = self.client.describe_tasks(cluster=self.cluster, tasks=[self.arn]).get("tasks") or []
        except Exception:  # the provider's own error says enough when ECS cannot be asked
            self.log.exception("Could not describe ECS task %s", self.arn)
            return None
        if not tasks or tasks[0].get("lastStatus") != "STOPPED":
            return None
        task = tasks[0]
        containers = task.get("containers") or [{}]
        container = next((c for c in containers if c.get("name") == self.container_name), containers[0])
        code = container.get("exitCode")
        if code == 0:
            return None
        override: dict[str, Any] = next(iter((self.overrides or {}).get("containerOverrides") or []), {})
        command = shlex.join(override.get("command") or []) or "(the task definition's command)"
        name = container.get("name", self.container_name)
        lines = [
            f"ECS task {self._get_ecs_task_id(self.arn)} ({command}) stopped: "
            f"{task.get('stopCode', '?')}: {task.get('stoppedReason', '')}".rstrip(": "),
            f"container {name}: exit code {code} ({EXIT_MEANINGS.get(code, 'failed')})"
            if code is not None
            else f"container {name} did not run: {container.get('reason') or 'no exit code'}",
        ]
        if self.task_log_fetcher:
            last = self.task_log_fetcher.get_last_log_messages(self.number_logs_exception)
            if last:
                lines.append(f"last {len(last)} log lines of {self.awslogs_group}/{self._get_logs_stream_name()}:")
                lines.extend(last)
        error_class = AirflowFailException if code in PERMANENT_EXIT_CODES else AirflowException
        return error_class("\n".join(lines))
