"""A host of a test's own: a network namespace joined to this one by a veth pair, 10.231.<n>.2 inside and
10.231.<n>.1 on this side. Its link can be cut (no FIN, no RST: packets just stop), as when a cluster
node drops off the network, and its address black-holed (a connection to it is never answered). Needs
root; removed on exit."""

import os
import subprocess
from typing import Self


class Host:
    def __init__(self, n: int):
        self.name = f"bench{os.getpid() % 100000}h{n}"
        self.outside, self.inside = f"bo{os.getpid() % 100000}h{n}", f"bi{os.getpid() % 100000}h{n}"
        self.gateway, self.address, self.network = f"10.231.{n}.1", f"10.231.{n}.2", f"10.231.{n}.0/30"

    def _ip(self, *arguments: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", self.name] if inside else []
        subprocess.run([*prefix, "ip", *arguments], check=True, capture_output=True, timeout=30)

    def __enter__(self) -> Self:
        if os.geteuid() != 0:
            raise RuntimeError("a network namespace needs root")
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        self._ip("link", "set", self.inside, "netns", self.name)
        self._ip("addr", "add", f"{self.gateway}/30", "dev", self.outside)
        self._ip("link", "set", self.outside, "up")
        self._ip("addr", "add", f"{self.address}/30", "dev", self.inside, inside=True)
        self._ip("link", "set", self.inside, "up", inside=True)
        self._ip("link", "set", "lo", "up", inside=True)
        return self

    def command(self, argv: list) -> list:
        """`argv` run on this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """The host drops off the network: its link goes down, nothing more leaves or arrives."""
        self._ip("link", "set", self.inside, "down", inside=True)

    def black_hole(self) -> None:
        """Whatever reaches the host gets no answer: its replies are dropped."""
        self._ip("route", "add", "blackhole", self.gateway, inside=True)

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True, timeout=30, check=False)
