"""Where Hydra finds the suite's launcher (it loads launchers from the hydra_plugins package only); the
code is in runners/slurm.py."""

from runners.slurm import ClusterLauncher


class SlurmLauncher(ClusterLauncher):
    """hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml)."""
