"""The local SLURM cluster (slurm/local_cluster.sh), the sacct stand-in and the submitit helpers.

Everything here runs real daemons (slurmctld, slurmd, munged) and real sbatch/srun/scancel.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pretrain.config import SRDDConfig
from slurm.cluster import SCRIPT, SlurmError, state_dir
from slurm.submit import JobsFailedError, executor_parameters, make_executor, wait_all

slurm = pytest.mark.slurm


def _write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -euo pipefail\n" + body)
    return path


def _cluster_script(cluster, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                          env=cluster.full_env(), timeout=120)


def _sacct(cluster, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess:
    env = cluster.full_env({"SLURM_CONF": str(conf)} if conf else None)
    return subprocess.run(["sacct", *args], capture_output=True, text=True, env=env, timeout=60)


def _slurm_cfg(**slurm_fields) -> SRDDConfig:
    cfg = SRDDConfig()
    for key, value in slurm_fields.items():
        setattr(cfg.slurm, key, value)
    return cfg


def _square(x: int) -> int:
    return x * x


@slurm
def test_status_up_and_start_is_idempotent(slurm_cluster):
    status = _cluster_script(slurm_cluster, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "slurmctld: running" in status.stdout
    assert re.search(r"node localhost: (idle|mixed|allocated)", status.stdout), status.stdout
    pid_file = state_dir() / "run" / "slurmctld.pid"
    pid_before = pid_file.read_text()
    again = _cluster_script(slurm_cluster, "start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert f"export SLURM_CONF={slurm_cluster.conf}" in again.stdout
    assert pid_file.read_text() == pid_before  # the same daemon, not a second one


def test_status_exits_nonzero_when_down(tmp_path):
    """A state dir with no daemons: status prints the state and fails (no cluster needed)."""
    result = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True,
                            env={**os.environ, "SRDD_SLURM_DIR": str(tmp_path / "none")}, timeout=60)
    assert result.returncode != 0
    assert "slurmctld: down" in result.stdout


@slurm
def test_a_second_cluster_on_a_taken_port_refuses_to_start(slurm_cluster, tmp_path):
    """A second checkout's cluster on the same port must not 'start' by talking to the first one's
    controller (its jobs would run under the other checkout's daemons)."""
    second = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=120,
                            env=slurm_cluster.full_env({"SRDD_SLURM_DIR": str(tmp_path / "second")}))
    assert second.returncode == 1
    assert re.search(r"port \d+ is taken by .*slurmctld.*SRDD_SLURM_PORT", second.stderr), second.stderr
    assert not (tmp_path / "second" / "run" / "slurmctld.pid").exists()
    assert _cluster_script(slurm_cluster, "status").returncode == 0  # the first cluster is untouched


@slurm
def test_sbatch_job_runs_to_completion(slurm_cluster, tmp_path):
    out = tmp_path / "out.txt"
    script = _write_script(tmp_path / "job.sh", 'echo "args=$* greeting=$GREETING node=$SLURMD_NODENAME" > "$1"\n')
    job_id = slurm_cluster.sbatch(script, str(out), "extra", env={"GREETING": "hello"}, timeout_s=60)
    assert slurm_cluster.job_state(job_id) == "COMPLETED"
    assert out.read_text() == f"args={out} extra greeting=hello node=localhost\n"


@slurm
def test_job_array_writes_one_output_per_task(slurm_cluster, tmp_path):
    script = _write_script(tmp_path / "array.sh",
                           'echo "$SLURM_ARRAY_JOB_ID $((SLURM_ARRAY_TASK_ID * 10))" > "$1/task_$SLURM_ARRAY_TASK_ID"\n')
    job_id = slurm_cluster.sbatch(script, str(tmp_path), sbatch_args=["--array=0-2"], timeout_s=90)
    assert slurm_cluster.task_states(job_id) == {f"{job_id}_{i}": "COMPLETED" for i in range(3)}
    outputs = sorted(p.name for p in tmp_path.glob("task_*"))
    assert outputs == ["task_0", "task_1", "task_2"]
    for i in range(3):
        assert (tmp_path / f"task_{i}").read_text() == f"{job_id} {i * 10}\n"


@slurm
def test_failed_job_is_reported_with_its_log(slurm_cluster, tmp_path):
    script = _write_script(tmp_path / "fail.sh", 'echo "shard 7 is corrupt" >&2\nexit 3\n')
    with pytest.raises(SlurmError) as err:
        slurm_cluster.sbatch(script, timeout_s=60)
    message = str(err.value)
    assert "FAILED" in message and "shard 7 is corrupt" in message
    job_id = message.split()[2]
    assert _sacct(slurm_cluster, "-P", "-n", "-o", "JobID,State,ExitCode", "-j", job_id).stdout == \
        f"{job_id}|FAILED|3:0\n"


@slurm
def test_node_has_every_cpu_and_an_impossible_request_fails_fast(slurm_cluster, tmp_path, monkeypatch):
    """The node offers the machine's CPUs even when OMP_NUM_THREADS=1 (GNU nproc honours it), and a
    job asking for more than the node has is reported at once instead of pending until a timeout."""
    cpus = len(os.sched_getaffinity(0))
    assert re.search(rf"^NodeName=localhost .*\bCPUs={cpus}\b", slurm_cluster.conf.read_text(), re.MULTILINE)
    script = _write_script(tmp_path / "big.sh", "true\n")
    with pytest.raises(SlurmError, match=rf"can never start: pending with reason PartitionConfig .*{cpus + 1} CPUs"):
        slurm_cluster.sbatch(script, sbatch_args=[f"--cpus-per-task={cpus + 1}"], timeout_s=120)


@slurm
def test_sacct_standin_reads_the_completion_log(slurm_cluster, tmp_path):
    """Jobs slurmctld has forgotten are answered from the jobcomp log; later records win."""
    log = tmp_path / "jobcomp.log"
    log.write_text(
        "JobId=987001 UserId=root(0) Name=a JobState=REQUEUED NodeList=localhost ExitCode=0:0\n"
        "JobId=987001 UserId=root(0) Name=a JobState=TIMEOUT NodeList=localhost ExitCode=0:15\n"
        "JobId=987003 UserId=root(0) Name=b JobState=COMPLETED NodeList=localhost ArrayJobId=987002 "
        "ArrayTaskId=1 ExitCode=0:0\n"
        "JobId=987002 UserId=root(0) Name=b JobState=CANCELLED NodeList=(null) ArrayJobId=987002 "
        "ArrayTaskId=0 ExitCode=0:0\n")
    conf = tmp_path / "slurm.conf"
    conf.write_text(slurm_cluster.conf.read_text().replace(f"JobCompLoc={state_dir()}/jobcomp.log",
                                                           f"JobCompLoc={log}"))
    result = _sacct(slurm_cluster, "-o", "JobID,State,NodeList", "--parsable2", "-j", "987001", "-j", "987002",
                    conf=conf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["JobID|State|NodeList", "987001|TIMEOUT|localhost",
                                          "987002_0|CANCELLED|None assigned", "987002_1|COMPLETED|localhost"]
    bad = _sacct(slurm_cluster, "-o", "JobID,MaxRSS", conf=conf)
    assert bad.returncode == 1 and "maxrss" in bad.stderr


@slurm
def test_sacct_standin_defers_to_real_sacct_with_accounting(slurm_cluster, tmp_path):
    """On a cluster with slurmdbd the real sacct answers (here it fails: no slurmdbd is running)."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(slurm_cluster.conf.read_text().replace("accounting_storage/none", "accounting_storage/slurmdbd"))
    result = _sacct(slurm_cluster, "-P", "-j", "1", conf=conf)
    assert result.returncode != 0 and "database" in result.stderr.lower()


def test_executor_parameters_follow_the_slurm_section():
    cpu = executor_parameters(_slurm_cfg(partition="debug", qos="high", ranks_per_node=3, time_min=7), "x")
    assert cpu["slurm_partition"] == "debug" and cpu["slurm_qos"] == "high" and "slurm_account" not in cpu
    assert (cpu["gpus_per_node"], cpu["tasks_per_node"], cpu["timeout_min"], cpu["nodes"]) == (0, 3, 7, 1)
    gpu = executor_parameters(_slurm_cfg(gpus_per_node=8, nodes=2), "x")
    assert (gpu["gpus_per_node"], gpu["tasks_per_node"], gpu["nodes"]) == (8, 8, 2)


@slurm
def test_submitit_job_array_returns_results(slurm_cluster, tmp_path, monkeypatch):
    slurm_cluster.activate(monkeypatch)
    executor = make_executor(_slurm_cfg(enabled=True, cpus_per_task=1), "square", tmp_path / "%j",
                             tasks_per_node=1, timeout_min=5)
    jobs = executor.map_array(_square, [2, 3, 4])
    assert wait_all(jobs, timeout_s=90, poll_s=0.5) == [4, 9, 16]
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(3)]  # one SLURM array
    assert slurm_cluster.wait(array_id, timeout_s=30) == "COMPLETED"


@slurm
def test_submitit_detects_a_cancelled_job(slurm_cluster, tmp_path, monkeypatch):
    """Without accounting submitit would wait forever here; the sacct stand-in reports CANCELLED."""
    slurm_cluster.activate(monkeypatch)
    executor = make_executor(_slurm_cfg(enabled=True, cpus_per_task=1), "sleeper", tmp_path / "%j",
                             tasks_per_node=1, timeout_min=5)
    job = executor.submit(time.sleep, 300)
    slurm_cluster.wait_for_state(job.job_id, "RUNNING", timeout_s=60)
    subprocess.run(["scancel", job.job_id], check=True, env=slurm_cluster.full_env())
    with pytest.raises(JobsFailedError) as err:
        wait_all([job], timeout_s=60, poll_s=0.5)
    assert err.value.failures.keys() == {job.job_id}
    assert "CANCELLED" in str(err.value) and str(job.paths.stderr) in str(err.value)
