"""A real one-node SLURM cluster of the test session's own: munged with its own key and socket, slurmctld
and slurmd from a generated slurm.conf, every file in one temporary folder, the daemons stopped by PID.
Debian's slurm-wlm and munge (apt-get; .ci/run installs them); run as root, as the daemons need. A test
points the SLURM commands at it with SLURM_CONF (`cluster.env`)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PARTITION = "cpu"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SlurmCluster:
    folder: Path
    partition: str = PARTITION
    pids: list = field(default_factory=list)

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.folder / "slurm.conf")}

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60,
                                check=False)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, state, reason) of each job the cluster holds, array tasks one each."""
        out = self.run("squeue", "-h", "-r", "-o", "%i|%T|%r")
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def wait_for(self, condition, timeout: float = 300, what: str = "the cluster"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout} s for {what}")


def slurm_conf(folder: Path, host: str, cpus: int, memory_mb: int) -> str:
    return f"""ClusterName=bench
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MpiDefault=none
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes={host} MaxTime=1 State=UP
"""


def start(parent: Path | None = None) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once the node is idle. Raises RuntimeError naming what
    is missing."""
    for binary in ("munged", "slurmctld", "slurmd", "sbatch"):
        if not shutil.which(binary) and not Path(f"/usr/sbin/{binary}").exists():
            raise RuntimeError(f"{binary} is not installed (apt-get install slurm-wlm munge; .ci/run does)")
    if os.geteuid() != 0:
        raise RuntimeError("the SLURM daemons of a test cluster run as root")
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-", dir=parent))
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    cluster = SlurmCluster(folder)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
                    f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                    f"--seed-file={folder}/munged.seed"], check=True, capture_output=True, timeout=30)
    cluster.pids.append(int((folder / "munged.pid").read_text()))
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
    (folder / "slurm.conf").write_text(slurm_conf(folder, host, cpus, memory_mb))
    env = cluster.env
    for daemon, pid_file in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
        subprocess.run([daemon], env=env, check=True, capture_output=True, timeout=30)
        cluster.wait_for(lambda f=folder / pid_file: f.is_file() and f.read_text().strip(), 30, daemon)
        cluster.pids.append(int((folder / pid_file).read_text()))
    cluster.wait_for(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False), 60,
                     "the node to be idle")
    return cluster


def stop(cluster: SlurmCluster) -> None:
    """scancel everything, then stop the daemons by PID and remove the folder."""
    cluster.run("scancel", "--full", "-u", "root", check=False)
    for pid in reversed(cluster.pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster.folder, ignore_errors=True)
