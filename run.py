"""Entry point: `python run.py [group=option ...] [key=value ...]`, or `-m` to sweep a grid (installed:
the `synthbench` command, the same app: runners/cli.py)."""

from runners.cli import main

if __name__ == "__main__":
    main()
