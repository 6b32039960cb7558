"""A real PostgreSQL server of a test's own: initdb and pg_ctl in a temporary folder, at a free port, on the
addresses it is given; stopped, started again and removed by the test. As root it runs as the `postgres`
user, since the server refuses to run as root."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Self


def binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PostgresServer:
    def __init__(self, listen: tuple = ("127.0.0.1",), trust: tuple = ()):
        """`listen`: the addresses it accepts connections on; `trust`: networks (CIDR) besides this
        machine's loopback it lets in without a password."""
        import pwd

        self.bin, self.listen, self.trust = binaries(), listen, trust
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs "
                               "it)")
        # its own folder under /tmp: pytest's are private to root, and the server runs as another user
        self.folder = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
        self.as_user: list = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root without a postgres user to run the server as") from None
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.data = self.folder / "data"
        self.url = f"postgresql://bench@127.0.0.1:{self.port}"

    def _pg_ctl(self, *arguments, check: bool = True) -> None:
        subprocess.run([*self.as_user, self.bin / "pg_ctl", "-D", self.data, *arguments], check=check,
                       capture_output=True, timeout=120)

    def start(self) -> Self:
        if not self.data.exists():
            subprocess.run([*self.as_user, self.bin / "initdb", "-D", self.data, "-A", "trust", "-U",
                            "bench"], check=True, capture_output=True, timeout=120)
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in self.trust)
        self._pg_ctl("-l", self.folder / "log", "-w", "-o",
                     f"-p {self.port} -k {self.folder} -c listen_addresses={','.join(self.listen)} "
                     "-c max_connections=300", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop", check=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
