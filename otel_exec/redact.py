"""Secret redaction for the env and argv of an exec; on by default.

The policy errs on the side of hiding: a value that merely looks secret is
replaced by ``REDACTED``. It never raises on str input (lone surrogates and
``\\xNN`` escapes included) and every regex is linear in its input, so a
hostile 128 KiB argument costs time proportional to its length only.

Secret-looking names (env keys, ``--flag`` names, ``KEY=`` inside an
argument, HTTP header names) are matched ignoring ASCII case:

* as a substring: every word of ``DEFAULT_SECRET_KEY_WORDS`` that is not in
  ``WORD_PART_KEY_WORDS`` (``GITHUB_TOKEN``, ``db.password``, ``OAUTH_X``),
  except that ``AUTHOR``/``AUTHORS`` do not count as ``AUTH``
  (``GIT_AUTHOR_NAME`` is no secret);
* as a word part only: ``WORD_PART_KEY_WORDS`` (``KEY``, ``PWD``, ``DSN``),
  which are short enough to sit inside ordinary words (``KEYBOARD``,
  ``MONKEY``, ``XKB_KEYMAP``). A word part is delimited by the ends of the
  name, a non-letter (``_ . -`` or a digit) or a camelCase step, with an
  optional plural ``s``: ``API_KEY``, ``KEY``, ``SSH_KEYS``,
  ``AWS_ACCESS_KEY_ID``, ``PRIVATE_KEY``, ``apiKey``, ``MYSQL_PWD``.

``PWD`` and ``OLDPWD`` themselves are the working directory and never count
as secret, whatever pattern is configured.

Short options such as ``-p`` are not treated as secret flags: ``-p`` is a
port, a path or a password depending on the program, so a list would be
both incomplete and wrong; ``--redact-pattern`` covers specific tools.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal

EnvCapture = Literal["none", "redacted", "all"]

REDACTED: Final = "[REDACTED]"

DEFAULT_SECRET_KEY_WORDS: Final[tuple[str, ...]] = (
    "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "AUTH",
    "COOKIE", "SESSION", "PRIVATE", "SIGNATURE", "APIKEY", "KEY", "PWD", "DSN",
)
WORD_PART_KEY_WORDS: Final[tuple[str, ...]] = ("KEY", "PWD", "DSN")

# W3C trace context and baggage, propagated through the environment: the
# tracing pipeline needs them intact in every mode.
TRACE_CONTEXT_KEYS: Final = frozenset({"TRACEPARENT", "TRACESTATE", "BAGGAGE"})

_NEVER_SECRET_NAMES: Final = frozenset({"PWD", "OLDPWD"})


def _word_part(word: str) -> str:
    upper, lower, title = word, word.lower(), word.capitalize()
    return (
        f"(?<![A-Za-z]){upper}S?(?![A-Za-z])"
        f"|(?<![A-Za-z]){lower}s?(?![a-z])"
        # Title case may also follow a lower-case letter: the camelCase step.
        f"|(?<![A-Z]){title}s?(?![a-z])"
    )


def _default_key_pattern() -> str:
    substrings = [
        "AUTH(?!ORS?(?![A-Za-z]))" if w == "AUTH" else w
        for w in DEFAULT_SECRET_KEY_WORDS
        if w not in WORD_PART_KEY_WORDS
    ]
    parts = [f"(?i:{'|'.join(substrings)})"]
    parts += [_word_part(w) for w in WORD_PART_KEY_WORDS]
    return "|".join(parts)


DEFAULT_SECRET_KEY_PATTERN: Final = _default_key_pattern()

# Credentials in a URL's authority: scheme://user:password@host or
# scheme://token@host. The authority ends at / ? # (RFC 3986), and the
# userinfo runs to its last '@' because passwords with a raw '@' are common.
# The lookbehind and possessive scheme keep the scan linear on long runs.
_URL_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*+://)(?P<userinfo>[^/?#\s]*)@"
)
# NAME= anywhere in an argument; the lookbehind makes each NAME the whole run
# of name characters, which also keeps the scan linear.
_ASSIGNMENT = re.compile(r"(?<![\w.\-])[\w.\-]++=")
# End of a URL query value.
_QUERY_VALUE_END = re.compile(r"[&#]")
# "Name: value" as given to curl -H, httpie, or wget --header=...
_HEADER = re.compile(r"(?:-[\w\-]*+=)?[ \t]*+(?P<name>[\w\-]++)[ \t]*+:[ \t]*+")

_ENV_MODES: Final = ("none", "redacted", "all")
# The same few hundred names recur in every exec, so the decision per name is
# memoized; names longer than this are not, and the memo is cleared when full.
_NAME_CACHE_MAX: Final = 4096
_NAME_CACHE_LEN_MAX: Final = 256
# Env entries known to pass through unchanged, bounded by their total length
# so the memory stays small whatever the workload.
_UNCHANGED_CHARS_MAX: Final = 1 << 20
_UNCHANGED_ENTRY_LEN_MAX: Final = 4096


def _url_credentials(m: re.Match[str]) -> str:
    user, colon, password = m["userinfo"].partition(":")
    if colon:
        return m.group() if not password else f"{m['scheme']}{user}:{REDACTED}@"
    # No password: a lone user part is often a token (https://TOKEN@host),
    # so it is hidden too, at the cost of also hiding ssh://git@host.
    return m.group() if not user else f"{m['scheme']}{REDACTED}@"


def _mark_nonempty(m: re.Match[str]) -> str:
    # A user pattern that can match the empty string must not sprinkle
    # markers between every character.
    return REDACTED if m.end() > m.start() else ""


class RedactionPolicy:
    """What of an exec's env and argv may leave the host.

    ``env_capture``: ``"all"`` keeps the env as is, ``"none"`` drops it,
    ``"redacted"`` hides the values of secret-looking keys. Trace context
    keys (``TRACE_CONTEXT_KEYS``) and ``env_allow`` keys (both exact case,
    as env keys are) are kept verbatim in every mode, also in
    ``"none"``, where they are the only entries kept. Every other kept value
    has URL credentials and ``extra_patterns`` matches hidden. Entries
    without ``=`` are kept as they are.

    ``secret_key_pattern`` (a regex searched case-insensitively in names)
    replaces the default words. ``extra_patterns`` are user regexes; their
    matches inside any argument or scanned env value become ``REDACTED``.
    Invalid regexes raise ``re.error`` here, never while redacting.

    The policy memoizes per-name decisions and unchanged env entries (both
    bounded); under the GIL, concurrent use is safe.
    """

    __slots__ = ("env_capture", "env_allow", "_keep_keys", "_keep_prefixes", "_key_re", "_key_words",
                 "_extra", "_secret_names", "_unchanged", "_unchanged_chars")

    def __init__(
        self,
        env_capture: EnvCapture = "redacted",
        secret_key_pattern: str | None = None,
        extra_patterns: Sequence[str] = (),
        env_allow: Sequence[str] = (),
    ) -> None:
        if env_capture not in _ENV_MODES:
            raise ValueError(f"env_capture must be one of {', '.join(_ENV_MODES)}, not {env_capture!r}")
        self.env_capture = env_capture
        self.env_allow = frozenset(env_allow)
        self._keep_keys = TRACE_CONTEXT_KEYS | self.env_allow
        self._keep_prefixes = tuple(f"{k}=" for k in self._keep_keys)
        if secret_key_pattern is None:
            # ASCII case folding only, so that the plain substring test in
            # _looks_secret is a faithful gate in front of the regex.
            self._key_re = re.compile(DEFAULT_SECRET_KEY_PATTERN, re.ASCII)
            self._key_words: tuple[str, ...] = tuple(w.lower() for w in DEFAULT_SECRET_KEY_WORDS)
        else:
            self._key_re = re.compile(secret_key_pattern, re.IGNORECASE)
            self._key_words = ()
        self._extra = tuple(re.compile(p) for p in extra_patterns)
        self._secret_names: dict[str, bool] = {}
        # Only entries that leave unchanged: a redacted one would keep its
        # secret alive here.
        self._unchanged: set[str] = set()
        self._unchanged_chars = 0

    def is_secret_name(self, name: str) -> bool:
        """True if an env key, flag name (dashes stripped) or header name
        looks like it labels a secret."""
        secret = self._secret_names.get(name)
        if secret is None:
            secret = self._looks_secret(name)
            if len(name) <= _NAME_CACHE_LEN_MAX:
                if len(self._secret_names) >= _NAME_CACHE_MAX:
                    self._secret_names.clear()
                self._secret_names[name] = secret
        return secret

    def env(self, env: Sequence[str]) -> list[str]:
        """A redacted copy of ``env``: entries may be dropped or changed."""
        if self.env_capture == "all":
            return list(env)
        if self.env_capture == "none":
            keep_prefixes = self._keep_prefixes
            return [e for e in env if e.startswith(keep_prefixes)]
        keep = self._keep_keys
        unchanged = self._unchanged
        # Most of an env is inherited from exec to exec: one C-level pass
        # settles the common case where every entry was seen before.
        if unchanged.issuperset(env):
            return list(env)
        out: list[str] = []
        append = out.append
        for entry in env:
            if entry in unchanged:
                append(entry)
                continue
            key, eq, value = entry.partition("=")
            if not eq or key in keep:
                result = entry
            elif self.is_secret_name(key):
                append(f"{key}={REDACTED}" if value else entry)
                continue
            elif self._extra or "@" in value:
                result = f"{key}={self._scan(value)}"
            else:
                result = entry
            if result == entry:
                self._remember_unchanged(entry)
            append(result)
        return out

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A redacted copy of ``argv``, element for element.

        argv[0] is a program name: only URL credentials in it are hidden, and
        it never counts as a flag. A secret-looking flag without ``=``
        (``--token``) hides the next element unless that one is itself an
        option (starts with ``-``), which is how boolean flags such as
        ``--password-stdin`` are told apart.
        """
        out = list(argv)
        if not out:
            return out
        first = out[0]
        if "@" in first:
            out[0] = _URL_USERINFO.sub(_url_credentials, first)
        value_is_secret = False
        for i in range(1, len(out)):
            arg = out[i]
            if value_is_secret:
                value_is_secret = False
                if not arg:
                    continue
                if arg[0] != "-":
                    out[i] = REDACTED
                    continue
            if self._extra or "=" in arg or ":" in arg or "@" in arg:
                out[i] = self._redact_arg(arg)
            if arg[:1] == "-" and "=" not in arg:
                value_is_secret = self.is_secret_name(arg.lstrip("-"))
        return out

    def _looks_secret(self, name: str) -> bool:
        if name.upper() in _NEVER_SECRET_NAMES:
            return False
        if self._key_words:
            # The default regex only matches where one of its words is a
            # substring; plain substring tests rule most names out ~10x
            # faster than the regex's alternation would.
            lowered = name.lower()
            for word in self._key_words:
                if word in lowered:
                    break
            else:
                return False
        return self._key_re.search(name) is not None

    def _remember_unchanged(self, entry: str) -> None:
        if len(entry) <= _UNCHANGED_ENTRY_LEN_MAX:
            self._unchanged_chars += len(entry)
            if self._unchanged_chars > _UNCHANGED_CHARS_MAX:
                self._unchanged.clear()
                self._unchanged_chars = len(entry)
            self._unchanged.add(entry)

    def _scan(self, text: str) -> str:
        """User patterns, then URL credentials, in a value or argument."""
        for pattern in self._extra:
            text = pattern.sub(_mark_nonempty, text)
        if "@" in text:
            text = _URL_USERINFO.sub(_url_credentials, text)
        return text

    def _redact_arg(self, arg: str) -> str:
        arg = self._scan(arg)
        # Assignments before headers: in --password=session:x the header
        # rule would otherwise show "session" from inside the secret.
        if "=" in arg:
            arg = self._redact_assignments(arg)
        if ":" in arg:
            m = _HEADER.match(arg)
            if m is not None and m.end() < len(arg) and self.is_secret_name(m["name"]):
                return arg[:m.end()] + REDACTED
        return arg

    def _redact_assignments(self, arg: str) -> str:
        pieces: list[str] = []
        done = 0  # arg[:done] is settled
        for m in _ASSIGNMENT.finditer(arg):
            start, value_start = m.start(), m.end()
            if start < done or not self.is_secret_name(arg[start:value_start - 1].lstrip("-")):
                continue
            if start and arg[start - 1] in "?&":
                # A URL query parameter: its value ends at the next one.
                end = _QUERY_VALUE_END.search(arg, value_start)
                value_end = end.start() if end else len(arg)
            else:
                value_end = len(arg)
            if value_end > value_start:
                pieces += (arg[done:value_start], REDACTED)
                done = value_end
        if not pieces:
            return arg
        pieces.append(arg[done:])
        return "".join(pieces)
