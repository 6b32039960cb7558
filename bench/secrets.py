"""API keys stay in the environment (or a key file) and reach only an Authorization header. A key typed
into the config is refused before anything is written, and anything shaped like a key is redacted from
every config, record and log line the suite writes, as a second line of defence."""

import re
from typing import Any

# Shapes of real keys and tokens (OpenAI/Anthropic sk-..., Hugging Face hf_..., GitHub, AWS, Google, a
# bearer header); long enough that ordinary words and hashes never match.
KEY_SHAPE = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35})"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{16,}"
)
SECRET_FIELDS = re.compile(r"(?i)^(api_?key|token|secret|password|auth(orization)?)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """`value` with every key-shaped substring replaced, through dicts, lists and tuples."""
    if isinstance(value, str):
        return KEY_SHAPE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    return value


def typed_secrets(config: Any, prefix: str = "") -> list[str]:
    """The dotted keys of a (resolved, plain) config that hold a secret: a key-shaped value, a value under a
    secret's name (api_key, token, ...), or a key where the *name* of its variable belongs (api_key_env)."""
    found = []
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict | list):
                found += typed_secrets(value, f"{path}.")
            elif isinstance(value, str) and value and (
                KEY_SHAPE.search(value) or SECRET_FIELDS.match(str(key))
                or (str(key).endswith("_env") and not ENV_NAME.match(value))
            ):
                found.append(path)
    elif isinstance(config, list):
        for index, value in enumerate(config):
            found += typed_secrets(value, f"{prefix}{index}.")
    return found
