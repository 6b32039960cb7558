"""API keys stay in the environment (or a key file) and reach only an Authorization header. A key typed
into the config is refused before anything is written. Every config, record, W&B field and log line the
suite writes is redacted, as a second line of defence, two ways: by value — the keys this process holds
(read for a backend, or in a variable named like a key: OPENAI_API_KEY, HF_TOKEN, ...), even where a
server echoes one back in an error — and by shape, anything that looks like a key."""

import os
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
# a variable whose value is a secret by its name: ..._API_KEY, ..._KEY, ..._TOKEN, ..._SECRET, ...
SECRET_VARIABLE = re.compile(r"(?i)((^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD)|^PGPASSWORD)$")
MIN_SECRET = 8  # shorter values would scrub ordinary words; no real key is this short
_held: set = set()


def hold(key: str) -> str:
    """Remember a key this process uses, so that it is scrubbed wherever it appears; returns it."""
    if len(key) >= MIN_SECRET:
        _held.add(key)
    return key


def held_keys() -> list:
    """The keys to scrub, longest first: those read for a backend and those in secret variables."""
    from_environment = {value for name, value in os.environ.items()
                        if SECRET_VARIABLE.search(name) and len(value) >= MIN_SECRET}
    return sorted(_held | from_environment, key=len, reverse=True)


def scrub(text: str, keys: list) -> str:
    """`text` without `keys`, and without the start of one where the text was cut short inside it."""
    for key in keys:
        text = text.replace(key, REDACTED)
        for cut in range(len(key) - 1, MIN_SECRET - 1, -1):  # "...Bearer 3fa9c1" cut at 200 characters
            if text.endswith(key[:cut]):
                text = text[:-cut] + REDACTED
                break
    return KEY_SHAPE.sub(REDACTED, text)


def redact(value: Any, keys: list | None = None) -> Any:
    """`value` with every held key and key-shaped substring replaced, through dicts, lists and tuples (the
    held keys looked up once per call, not once per string)."""
    keys = held_keys() if keys is None else keys
    if isinstance(value, str):
        return scrub(value, keys)
    if isinstance(value, dict):
        return {key: redact(item, keys) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(item, keys) for item in value)
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
