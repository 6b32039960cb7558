class BenchError(Exception):
    """A problem with the user's input (config, data, teacher output). Its message is one line
    that names the problem and the fix; run.py prints it without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, told in one line: what the stores kept and that the same command resumes from it."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an error's message (its type's name when the message is empty): a
    one-line error quoting another never fails on what it quotes."""
    line = next((text.strip() for text in str(error).splitlines() if text.strip()), type(error).__name__)
    return line[:limit] if limit else line


def last_line(error: BaseException) -> str:
    """The last non-empty line (Hydra and OmegaConf put the cause there), or the type's name."""
    lines = [text.strip() for text in str(error).splitlines() if text.strip()]
    return lines[-1] if lines else type(error).__name__
