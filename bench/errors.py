class BenchError(Exception):
    """A problem with the user's input (config, data, teacher output). Its message is one line
    that names the problem and the fix; run.py prints it without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, told in one line: what the stores kept and that the same command resumes from it."""
