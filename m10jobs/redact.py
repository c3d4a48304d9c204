"""Keep secrets out of every line m10jobs writes: one registry, one mask.

Two mechanisms, applied together by redact():

- Patterns, for secrets nobody registered (a DSN a driver echoes back): the
  password of any `scheme://user:PASSWORD@host` URI (multi-host too), and the value
  of any `NAME=value` / `"NAME": value` whose NAME contains password, passwd,
  passphrase, pwd, secret, token, credential, api_key, private_key, access_key,
  signing_key or authorization (an unquoted `NAME: text` is not one: it is how an
  error names a key).
  These mask secrets of any length, even one character.
- The registry: config loading registers every value that comes from a
  secret-bearing place (config.register_secrets: DSN passwords raw and
  percent-decoded, credential variables of the environment, every value of
  [rollback.env] and of the pass_env variables, every value under a key that looks
  secret, every setting declared secret) before validating anything, so no line --
  a config error included -- is written before they are known.  A registered
  value is masked wherever it appears, also in its percent-encoded/-decoded,
  JSON-escaped and repr-escaped forms.  Values shorter than MIN_LEN are not
  registered (masking every "ab" in every line would garble the output and tell
  the secret anyway); they stay masked where the patterns see them.

Text outputs go through redact(); structured ones (the JSON log lines, the
summary on stdout, metrics labels) through redact_obj() before they are encoded,
so the mask never breaks their syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

MASK = "***"
MIN_LEN = 4

SECRET_NAME = re.compile(
    r"pass(?:word|wd|phrase)|pwd|secret|token|credential|creds?(?![a-z])|auth|cookie|"
    r"api_?key|private_?key|access_?key|signing_?key|(?:^|[_.-])key$|salt$",
    re.IGNORECASE,
)
"""A name (config key, environment variable) whose value is a secret: *PASSWORD*,
*PASSWD*, *PASSPHRASE*, *PWD*, *SECRET*, *TOKEN*, *CREDENTIAL*, *CRED(S)*, *AUTH*,
*COOKIE*, *API_KEY*, *PRIVATE_KEY*, *ACCESS_KEY*, *SIGNING_KEY*, names ending in
_KEY or SALT -- unless NOT_SECRET_NAME says it names something else."""

NOT_SECRET_NAME = re.compile(r"(?:^|[_.-])(?:id|file|path|dir|sock|url|prefix)$", re.IGNORECASE)
"""What a secret-looking name still does not hold: AWS_ACCESS_KEY_ID (an identity),
PGPASSFILE, *_PATH, *_DIR, SSH_AUTH_SOCK (paths; a URL's password is taken apart)."""

_TEXT_KEY = (
    r"[\w.-]*?(?:pass(?:word|wd|phrase)|pwd|secret|token|credential|api_?key|"
    r"private_?key|access_?key|signing_?key|authorization)[\w.-]*?"
)


def looks_secret(name: str) -> bool:
    """True for a name whose value must never be shown (SECRET_NAME)."""
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Compiled on first use: --help never writes a line that needs them."""
    # The password runs to the authority's LAST '@' (an unencoded '@' in it must not
    # leave its tail behind).
    uri_password = re.compile(
        r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)"
        r"[^\s\"'/?#]*(?=@[^@\s\"'/?#]*(?:[/?#\s\"']|$))"
    )
    kv_secret = re.compile(
        rf"(?P<head>(?<![\w-]){_TEXT_KEY}(?:[\"']\s*[=:]|\s*=)\s*)(?![\"']?\*\*\*)"
        r"(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;&\"'}\]]+)",
        re.IGNORECASE,
    )
    return uri_password, kv_secret


_known: set[str] = set()
_compiled: list[re.Pattern[str] | None] = [None]


def _forms(value: str) -> set[str]:
    """The value as it may appear in an output: raw, percent-encoded and -decoded,
    JSON- and repr-escaped."""
    import json
    from urllib.parse import quote, unquote

    # surrogateescape: a value from a non-UTF-8 environment percent-encodes as its bytes
    forms = {value, unquote(value), quote(value, safe="", errors="surrogateescape")}
    for v in list(forms):
        forms |= {
            json.dumps(v)[1:-1],
            json.dumps(v, ensure_ascii=False)[1:-1],
            repr(v)[1:-1],
        }
    return {f for f in forms if len(f) >= MIN_LEN}


def register_secret(value: str | None) -> None:
    """Mask this exact value (and its encoded forms) wherever it appears."""
    if not isinstance(value, str) or len(value) < MIN_LEN:
        return
    new = _forms(value) - _known
    if new:
        _known.update(new)
        _compiled[0] = None


def dsn_passwords(dsn: str) -> list[str]:
    """The password(s) a libpq/redis/http URI or conninfo string carries, raw and
    percent-decoded: `scheme://user:pw@h1,h2/db`, `?password=pw` (any secret-looking
    parameter: `?token=...`), conninfo `password=pw` (quoted values unescaped)."""
    from urllib.parse import unquote

    found: list[str] = []
    m = re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)", dsn)
    if m and "@" in m.group(1):
        userinfo = m.group(1).rpartition("@")[0]
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
    for q in re.finditer(r"(?:^|[?&\s])([\w.-]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&#]*)", dsn):
        if not looks_secret(q.group(1)):
            continue
        raw = q.group(2)
        if raw.startswith("'"):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found.append(raw)
    return [v for p in found if p for v in dict.fromkeys((p, unquote(p)))]


def register_dsn(value: Any) -> None:
    """Register the password(s) of a DSN-like string (nothing for anything else)."""
    if isinstance(value, str):
        for password in dsn_passwords(value):
            register_secret(password)


def register_tree(data: Any, name: str = "", *, secret: bool = False) -> None:
    """Register, anywhere in a parsed config tree, every string under a key that looks
    secret (or under `secret`), the value after a secret-looking flag in a list (an
    argv: `["deploy", "--token", "..."]`), and the password of every DSN-like string."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            register_tree(value, str(key), secret=secret or looks_secret(str(key)))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):  # an argv: `--token VALUE` (`--token=V`: a DSN's)
            flag = data[i - 1] if i else None
            after_flag = isinstance(flag, str) and flag.startswith("-") and looks_secret(flag)
            register_tree(value, name, secret=secret or after_flag)
    elif isinstance(data, str):
        register_dsn(data)
        if secret:
            register_secret(data)


def register_env(env: Mapping[str, str], names: Iterable[str] = ()) -> None:
    """Register the credential variables of an environment (names that look secret:
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, PGPASSWORD, REDISCLI_AUTH...), the
    values of `names` (pass_env: handed to a command, so assumed secret) and the
    password of any DSN-like value."""
    wanted = set(names)
    for key, value in env.items():
        if key in wanted or looks_secret(key):
            register_secret(value)
        if "://" in value or "=" in value:
            register_dsn(value)


def _known_pattern() -> re.Pattern[str] | None:
    if _compiled[0] is None and _known:
        _compiled[0] = re.compile(
            "|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True))
        )
    return _compiled[0]


def redact(text: str) -> str:
    uri_password, kv_secret = _patterns()
    known = _known_pattern()
    if known is not None:  # first: a pattern's mask must not split a known value
        text = known.sub(MASK, text)
    text = uri_password.sub(lambda m: m.group("head") + MASK, text)
    return kv_secret.sub(lambda m: m.group("head") + MASK, text)


def redact_obj(obj: Any) -> Any:
    """Every string in a JSON-like structure redacted (keys too), the structure kept."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {redact(k) if isinstance(k, str) else k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps of `obj` redacted (non-JSON values as str, then redacted), for what
    goes to stdout: the mask never breaks the JSON."""
    import json

    plain = json.loads(json.dumps(obj, default=str))
    return json.dumps(redact_obj(plain), **kwargs)
