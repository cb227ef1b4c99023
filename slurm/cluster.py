"""Python handle on the local SLURM cluster (slurm/local_cluster.sh): start it, submit, wait.

Used by the test fixture `slurm_cluster` and by anything that drives `sbatch` scripts directly
(the submitit path lives in slurm/submit.py). Job states come from `sacct`, which on the local
cluster is the stand-in in slurm/bin/ (no slurmdbd), so a killed job is seen as CANCELLED.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "local_cluster.sh"
STANDIN_BIN = REPO / "slurm" / "bin"

# States after which a job never runs again (sacct's base states; "CANCELLED by 0" is cut to CANCELLED).
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "REVOKED",
})
# squeue reasons for a pending job that only a config change can clear.
NEVER_RUNS_REASONS = frozenset({"PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit"})
_OUTPUT_DIRECTIVE = re.compile(r"^#SBATCH\s+(-o|--output)\b", re.MULTILINE)


class SlurmError(RuntimeError):
    """A SLURM command or job failed; the message names the job and where its log is."""


def state_dir() -> Path:
    return Path(os.environ.get("SRDD_SLURM_DIR", REPO / ".slurm"))


def with_standin_path(path: str) -> str:
    """PATH with slurm/bin first, so `sacct` resolves to the stand-in (it defers to the real one
    on clusters with accounting)."""
    parts = [p for p in path.split(os.pathsep) if p and Path(p) != STANDIN_BIN]
    return os.pathsep.join([str(STANDIN_BIN), *parts])


def _base_state(state: str) -> str:
    return state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"


@dataclass
class LocalCluster:
    """The running local cluster. `env` is what a subprocess needs to reach it."""

    conf: Path
    logs_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, timeout_s: float = 180.0, nodes: int = 1) -> "LocalCluster":
        """Start (or reuse) the cluster via local_cluster.sh with ``nodes`` SLURM nodes (a running
        cluster of another size is restarted); raises SlurmError with its output."""
        result = subprocess.run(["bash", str(SCRIPT), "start", "--nodes", str(nodes)], capture_output=True,
                                text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise SlurmError(f"slurm/local_cluster.sh start failed (exit {result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
        directory = state_dir()
        conf = directory / "etc" / "slurm.conf"
        env = {"SLURM_CONF": str(conf), "PATH": with_standin_path(os.environ.get("PATH", ""))}
        return cls(conf=conf, logs_dir=directory / "jobs", env=env)

    @classmethod
    def from_env(cls) -> "LocalCluster":
        """The cluster this process's environment points at (``SLURM_CONF``, else the site's
        default config), without starting anything: the handle orchestration submits through."""
        conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
        return cls(conf=conf, logs_dir=state_dir() / "jobs", env={"PATH": with_standin_path(os.environ.get("PATH", ""))})

    def activate(self, monkeypatch) -> None:
        """Point this process at the cluster (SLURM_CONF, the sacct stand-in on PATH) for one test;
        needed where the test process itself calls SLURM, as submitit does."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)

    def full_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def _run(self, *cmd: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
        result = subprocess.run(cmd, capture_output=True, text=True, env=self.full_env(env), cwd=cwd)
        if result.returncode != 0:
            raise SlurmError(f"`{' '.join(cmd)}` failed (exit {result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def sbatch(self, script_path: str | Path, *args: str, sbatch_args: Sequence[str] = (),
               env: Mapping[str, str] | None = None, cwd: str | Path = REPO, wait: bool = True,
               timeout_s: float = 300.0, check: bool = True) -> str:
        """Submit `script_path args...`; return the job id (for arrays, the array's id).

        The job inherits os.environ + self.env + env (sbatch's --export=ALL). Without an --output
        in the script or in sbatch_args, stdout goes to <state dir>/jobs/<name>-<jobid>.out.
        With wait, block until every task is final; with check, raise SlurmError unless COMPLETED.
        """
        script = Path(script_path)
        options = list(sbatch_args)
        has_output = any(a in ("-o", "--output") or a.startswith("--output=") for a in options)
        if not has_output and not _OUTPUT_DIRECTIVE.search(script.read_text(errors="replace")):
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            options.append(f"--output={self.logs_dir}/%x-%j.out")
        out = self._run("sbatch", "--parsable", *options, str(script), *args, env=env, cwd=Path(cwd))
        job_id = out.strip().split(";")[0]
        if wait:
            state = self.wait(job_id, timeout_s=timeout_s)
            if check and state != "COMPLETED":
                raise SlurmError(self.describe_failure(job_id))
        return job_id

    def task_states(self, job_id: str) -> dict[str, str]:
        """{sacct JobID: base state} for a job, or for every task of an array job."""
        out = self._run("sacct", "--parsable2", "--noheader", "-o", "JobID,State", "-j", str(job_id))
        states = {}
        for line in out.splitlines():
            task, _, state = line.partition("|")
            if task and "." not in task:  # skip job steps (real sacct lists 123.batch etc.)
                states[task] = _base_state(state)
        return states

    def job_state(self, job_id: str) -> str:
        """One state for a job or a whole array: the first unfinished task's state while any runs,
        else COMPLETED if all completed, else the first failure's state; UNKNOWN if not found yet."""
        states = list(self.task_states(job_id).values())
        if not states:
            return "UNKNOWN"
        running = [s for s in states if s not in FINAL_STATES]
        if running:
            return running[0]
        failed = [s for s in states if s != "COMPLETED"]
        return failed[0] if failed else "COMPLETED"

    def wait(self, job_id: str, timeout_s: float = 300.0, poll_s: float = 0.3) -> str:
        """Block until the job (every array task) is final; return job_state. TimeoutError names it."""
        return self._poll(job_id, lambda state: state in FINAL_STATES, "final", timeout_s, poll_s)

    def wait_for_state(self, job_id: str, state: str, timeout_s: float = 300.0, poll_s: float = 0.3) -> str:
        """Block until job_state is `state` (e.g. RUNNING) or final; return it."""
        return self._poll(job_id, lambda s: s == state or s in FINAL_STATES, state, timeout_s, poll_s)

    def _poll(self, job_id: str, reached: Callable[[str], bool], what: str, timeout_s: float, poll_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_state(job_id)
            if reached(state):
                return state
            if state == "PENDING":
                self._raise_if_never_runs(job_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"SLURM job {job_id} still {state} after {timeout_s:.0f} s (waited for {what})")
            time.sleep(poll_s)

    def _raise_if_never_runs(self, job_id: str) -> None:
        """A job pending for a reason no waiting can fix (it asks for more than the partition has)
        would otherwise be waited on until the timeout: fail now, naming the reason."""
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %r %C"], capture_output=True, text=True,
                             env=self.full_env()).stdout
        for line in out.splitlines():
            task, reason, cpus = (line.split() + ["", "", ""])[:3]
            if reason in NEVER_RUNS_REASONS:
                raise SlurmError(f"SLURM job {task} can never start: pending with reason {reason} "
                                 f"(it asks for {cpus} CPUs; see `scontrol show partition` and the node's CPUs "
                                 f"in {self.conf})")

    def describe_failure(self, job_id: str) -> str:
        """Which tasks did not complete, and the tail of their stdout/stderr files."""
        lines = [f"SLURM job {job_id} did not complete:"]
        for task, state in self.task_states(job_id).items():
            if state == "COMPLETED":
                continue
            lines.append(f"  {task}: {state}")
            for log in self.log_paths(task):
                if log.is_file():
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    lines += [f"  --- {log} (last {len(tail)} lines)", *("    " + t for t in tail)]
        return "\n".join(lines)

    def log_paths(self, job_id: str) -> list[Path]:
        """StdOut/StdErr of a job or array task as slurmctld resolved them (empty once it forgot it)."""
        result = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                                env=self.full_env())
        paths = re.findall(r"\bStd(?:Out|Err)=(\S+)", result.stdout)
        return [Path(p) for p in dict.fromkeys(paths)]
