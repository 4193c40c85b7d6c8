"""Secret redaction for the env and argv of an exec; on by default.

One rule set (docs/redaction.md lists every rule and its limits), applied
the same way to the argv and env the kernel reports and to the argv that
the /proc seed reads. The policy errs on the side of hiding: a value that
merely looks secret is replaced by ``REDACTED``. It never raises on str
input (lone surrogates and ``\\xNN`` escapes included) and every scan is
linear in its input: regexes are anchored by lookbehinds and possessive
quantifiers, and the URL scan never re-reads text it has passed.

Secret-looking names (env keys, ``--flag`` names, ``KEY=`` inside a value,
HTTP header names, JSON keys) are matched ignoring ASCII case:

* as a substring: every word of ``DEFAULT_SECRET_KEY_WORDS`` that is not in
  ``WORD_PART_KEY_WORDS`` (``GITHUB_TOKEN``, ``db.password``, ``MASTERKEY``),
  except that ``AUTHOR``/``AUTHORS`` do not count as ``AUTH``;
* as a word part only: ``WORD_PART_KEY_WORDS`` (``KEY``, ``PASS``, ``PAT``
  ...), short enough to sit inside ordinary words (``KEYBOARD``,
  ``PASSAGE``, ``PATH``). A word part is delimited by the ends of the name,
  a non-letter or a camelCase step, with an optional plural ``s``.

``PWD`` and ``OLDPWD`` themselves are the working directory and never count.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

EnvCapture = Literal["none", "redacted", "all"]

REDACTED: Final = "[REDACTED]"

DEFAULT_SECRET_KEY_WORDS: Final[tuple[str, ...]] = (
    "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "AUTH", "COOKIE", "SESSION",
    "PRIVATE", "SIGNATURE", "APIKEY", "PRIVKEY", "MASTERKEY", "ACCESSKEY", "SSHPASS", "EXTRAHEADER", "BEARER",
    "KEY", "PWD", "DSN", "PASS", "PAT", "PW", "SIG", "JWT",
)
WORD_PART_KEY_WORDS: Final[tuple[str, ...]] = ("KEY", "PWD", "DSN", "PASS", "PAT", "PW", "SIG", "JWT")

# W3C trace context and baggage, propagated through the environment: the
# bound of each field's value. The variables carrying them are named by the
# fields unless configured otherwise (--traceparent-env, --tracestate-env).
# Lineage reads them before redaction (events.Strings.trace_context); what
# is emitted is bounded and scanned like any value, whatever the variable's
# name says. W3C: a traceparent is 55 characters (version 00), vendors
# should propagate 512 of tracestate, and baggage may reach 8192 bytes.
TRACE_CONTEXT_MAX: Final = {"TRACEPARENT": 256, "TRACESTATE": 512, "BAGGAGE": 8192}
# W3C tracestate limits: at most 32 list members, and vendors propagate at
# least 512 characters; a cut takes whole members, those over 128 first.
TRACESTATE_MAX_ENTRIES: Final = 32
TRACESTATE_LONG_ENTRY: Final = 128


def bounded_tracestate(value: str) -> str:
    """A tracestate within the W3C limits (trace-context #tracestate-limits),
    cut by whole entries (list members), never inside one: beyond 32
    members the last ones go; while longer than 512 characters, members
    over 128 characters go, the last first, then any member from the end.
    Within the limits the value is kept as it came; once cut, it is the
    members left, without empty ones and the white space around them,
    joined by commas."""
    limit = TRACE_CONTEXT_MAX["TRACESTATE"]
    if len(value) <= limit and value.count(",") < TRACESTATE_MAX_ENTRIES:
        return value
    members = [m for m in (part.strip(" \t") for part in value.split(",")) if m]
    del members[TRACESTATE_MAX_ENTRIES:]
    size = len(members) - 1 + sum(map(len, members))
    for longer_than in (TRACESTATE_LONG_ENTRY, 0):
        for i in range(len(members) - 1, -1, -1):
            if size <= limit:
                break
            if len(members[i]) > longer_than:
                size -= len(members.pop(i)) + 1
    return ",".join(members)


def _cut(limit: int) -> Callable[[str], str]:
    return lambda value: value[:limit]


def _trace_context_bounds(names: Mapping[str, str]) -> dict[str, Callable[[str], str]]:
    """Variable name -> how its value is bounded: a tracestate by whole
    members (bounded_tracestate), the others cut at their bound."""
    return {names.get(field, field): bounded_tracestate if field == "TRACESTATE" else _cut(limit)
            for field, limit in TRACE_CONTEXT_MAX.items()}


_NEVER_SECRET_NAMES: Final = frozenset({"PWD", "OLDPWD"})
# A flag with a secret-looking name takes the next argument as its value,
# except these, which name where a secret is, or a yes/no choice.
_NOT_A_VALUE_FLAG = re.compile(
    r"(?i)(?:^(?:no|ask|prompt|with|without|skip|use|show)[-_]|[-_](?:stdin|file|path|dir|env|prompt|cmd|command"
    r"|helper|type|length|len|method|mode|store|source)$)")


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


@functools.cache
def _default_key_re() -> re.Pattern[str]:
    """The default secret-name regex, compiled when a RedactionPolicy is
    first made, not at import: the costliest pattern to compile of the
    agent's start, which makes its policy while the programs load, before
    the /proc seed meets the first flag. ASCII case folding only, so that
    the substring gate in RedactionPolicy._looks_secret is faithful to it."""
    return re.compile(DEFAULT_SECRET_KEY_PATTERN, re.ASCII)


# The start of a URL: a scheme run that no scheme character precedes.
_URL_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*+://")
# Where the token holding a URL ends (credentials never hold these).
_URL_TOKEN_END = re.compile(r"[\s\"'<>]")
_AUTHORITY_END = re.compile(r"[/?#]")
# NAME= anywhere in a value; the lookbehind makes each NAME the whole run of
# name characters, which also keeps the scan linear.
_ASSIGNMENT = re.compile(r"(?<![\w.\-])[\w.\-]++[ \t]*+=")
_QUERY_VALUE_END = re.compile(r"[&#]")
# "Name: value" as given to curl -H, httpie, or wget --header=...
_HEADER = re.compile(r"(?:-[\w\-]*+=)?[ \t]*+(?P<name>[\w\-]++)[ \t]*+:[ \t]*+")
# "name": "value" in JSON; the value ends at the first unescaped quote.
_JSON_PAIR = re.compile(r'"(?P<name>[\w.\-]{1,128}+)"[ \t\r\n]*+:[ \t\r\n]*+"(?P<value>(?:[^"\\]|\\.)*+)"')
# Credentials with a shape of their own, wherever they appear.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"eyJ[A-Za-z0-9_\-]{4,}+\.eyJ[A-Za-z0-9_\-]{4,}+\.[A-Za-z0-9_\-]*+"  # JWT: two base64url JSON objects
    r"|gh[pousr]_[A-Za-z0-9]{20,}+|github_pat_[A-Za-z0-9_]{20,}+|glpat-[A-Za-z0-9_\-]{20,}+"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}+|xapp-[A-Za-z0-9\-]{10,}+"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?![0-9A-Za-z])"
    r"|AIza[0-9A-Za-z_\-]{35}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+|sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{32,}+"
    r"|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_\-]{50,}+|SG\.[A-Za-z0-9_\-]{16,}+\.[A-Za-z0-9_\-]{16,}+"
    r")")
# Authorization schemes followed by their credentials (also URL-encoded).
_AUTH_SCHEME = re.compile(r"(?i)(?<![A-Za-z])(?:Bearer|Basic|Digest|Token|Negotiate)(?:[ \t]++|%20)"
                          r"(?P<cred>[^\s\"',;]{8,}+)")
# A credential has a digit, a symbol or an inner capital: "Basic configuration" is prose.
_CREDENTIAL_LIKE = re.compile(r"[0-9+/=._~\-]|.[A-Z]")
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{1,64}+-----")
_PEM_END = "-----END "
# One pass that rules out the value rules above for most text: each of them
# needs one of these.
_RARE_RULE_HINT = re.compile("|".join(re.escape(h) for h in (
    "://", "-----begin ", "eyj", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "xapp-",
    "akia", "asia", "agpa", "aida", "aroa", "aiza", "k_live_", "k_test_", "sk-", "npm_", "pypi-", "sg.", "bearer",
    "basic", "digest", "token", "negotiate")))  # searched in lower case

_ENV_MODES: Final = ("none", "redacted", "all")
# The same few hundred names recur in every exec, so the decision per name is
# memoized; names longer than this are not, and the memo is cleared when full.
_NAME_CACHE_MAX: Final = 4096
_NAME_CACHE_LEN_MAX: Final = 256
# Strings known to pass through unchanged (env entries, argv elements), bounded by their total length
# so the memory stays small whatever the workload.
_UNCHANGED_CHARS_MAX: Final = 1 << 20
_UNCHANGED_ENTRY_LEN_MAX: Final = 4096


# -- program-aware options ----------------------------------------------------

# How much of a secret option's value goes: all of it, or what follows the
# first separator (curl -u user:pass keeps the user).
_ALL: Final = ""


# A plain class, not a dataclass: this module is on the start-up path
# (docs/architecture.md, Rules).
class ProgramRule:
    """Options of one program whose value is a secret: ``flags`` maps an
    option (``-p``, ``--user``) to what of its value is hidden (``_ALL``, or
    a separator after which the rest is hidden). A short option's value may
    be attached (``-pSECRET``), or be the next argument unless the option is
    in ``attached_only`` (7z's lone ``-p`` prompts). ``after``: the options
    only count once this subcommand was seen (``docker login -p``)."""

    def __init__(self, flags: dict[str, str], attached_only: frozenset[str] = frozenset(),
                 after: str | None = None) -> None:
        self.flags = flags
        self.attached_only = attached_only
        self.after = after

    def match(self, arg: str) -> tuple[str, str] | None:
        """(what of the value is hidden, the value attached to arg: "" when
        it is the next argument) if arg is one of the options, else None."""
        sep = self.flags.get(arg)
        if sep is not None:
            return None if arg in self.attached_only else (sep, "")
        if arg[:2] == "--":
            flag, eq, value = arg.partition("=")
            sep = self.flags.get(flag) if eq else None
            return None if sep is None else (sep, value)
        sep = self.flags.get(arg[:2])
        return None if sep is None else (sep, arg[2:])


_MYSQL = ProgramRule({"-p": _ALL})
_LOGIN = ProgramRule({"-p": _ALL}, after="login")
_SMB = ProgramRule({"-U": "%", "--user": "%"})
_SNMP = ProgramRule({"-A": _ALL, "-X": _ALL, "-c": _ALL})
_SQLCMD = ProgramRule({"-P": _ALL})
_SEVENZIP = ProgramRule({"-p": _ALL}, attached_only=frozenset({"-p"}))
_LDAP = ProgramRule({"-w": _ALL})
_KEYTOOL = ProgramRule({f"-{f}": _ALL for f in ("storepass", "keypass", "srcstorepass", "deststorepass",
                                                 "srckeypass", "destkeypass", "new")})
PROGRAM_RULES: Final[dict[str, ProgramRule]] = {
    **dict.fromkeys(("mysql", "mariadb", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck",
                     "mysqlpump", "mysqlbinlog", "mysqlsh", "mariadb-dump", "mariadb-admin", "mycli", "cqlsh",
                     "mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat",
                     "mongotop", "rdesktop"), _MYSQL),
    "sshpass": ProgramRule({"-p": _ALL}),
    "redis-cli": ProgramRule({"-a": _ALL, "--pass": _ALL}),
    "curl": ProgramRule({"-u": ":", "--user": ":", "-U": ":", "--proxy-user": ":", "-E": ":", "--cert": ":",
                         "--proxy-cert": ":"}),
    **dict.fromkeys(("docker", "podman", "nerdctl", "buildah", "skopeo", "oras", "helm", "az", "crane"), _LOGIN),
    **dict.fromkeys(("smbclient", "rpcclient", "smbget", "smbcacls", "smbmap", "net", "wbinfo"), _SMB),
    **dict.fromkeys(("snmpwalk", "snmpget", "snmpset", "snmpbulkwalk", "snmpgetnext", "snmptrap", "snmptable"),
                    _SNMP),
    **dict.fromkeys(("sqlcmd", "bcp", "ipmitool", "mosquitto_pub", "mosquitto_sub", "zip", "unzip"), _SQLCMD),
    **dict.fromkeys(("7z", "7za", "7zr", "rar", "unrar"), _SEVENZIP),
    **dict.fromkeys(("ldapsearch", "ldapmodify", "ldapadd", "ldapdelete", "ldapwhoami", "ldappasswd",
                     "ldapcompare", "ldapmodrdn", "ldapexop"), _LDAP),
    **dict.fromkeys(("keytool", "jarsigner"), _KEYTOOL),
    "openssl": ProgramRule({"-passin": _ALL, "-passout": _ALL, "-pass": _ALL, "-k": _ALL, "-password": _ALL}),
    "lftp": ProgramRule({"-u": ","}),
    **dict.fromkeys(("useradd", "usermod"), ProgramRule({"-p": _ALL, "--password": _ALL})),
}
# Programs that end the context of the one before them in a command line
# (sshpass -p X ssh -p 22 host: the second -p is a port).
_CONTEXT_ENDERS: Final = frozenset({"ssh", "scp", "sftp", "rsync", "sudo", "env", "nice", "timeout", "exec"})
_COMMAND_HINT = re.compile(r"\s-")


def _program_name(arg: str) -> str:
    arg = arg.lstrip("\"'(;&|")
    return arg[arg.rfind("/") + 1:]


def _positional_secrets(program: str, args: Sequence[str], is_secret: Callable[[str], bool]) -> set[int]:
    """Indexes (into args, which follow the program's name) of positional
    arguments that are secrets for this program."""
    secret: set[int] = set()
    positional = [i for i, a in enumerate(args) if a[:1] != "-"]
    words = [args[i] for i in positional]
    if program == "htpasswd":
        # htpasswd -b[c|n...] [file] user password: the password comes last.
        if any(a[:1] == "-" and a[1:2] != "-" and "b" in a for a in args) and positional:
            secret.add(positional[-1])
    elif program == "aws":
        # aws configure set NAME VALUE
        for j in range(len(words) - 3):
            if words[j] == "configure" and words[j + 1] == "set" and is_secret(words[j + 2]):
                secret.add(positional[j + 3])
    elif program == "vault":
        # vault login TOKEN (a method's key=value pairs are assignments)
        for j in range(len(words) - 1):
            if words[j] == "login" and "=" not in words[j + 1]:
                secret.add(positional[j + 1])
    elif program in ("sqlplus", "rman", "expdp", "impdp", "sqlldr", "dgmgrl"):
        # user/password[@connect]
        for j, w in enumerate(words):
            if w.find("/") > 0 and w[0] != "@":  # not @/path/script.sql
                secret.add(positional[j])
    elif program == "redis-cli":
        for j in range(len(words) - 1):
            if words[j].lower() in ("auth", "requirepass", "masterauth"):
                secret.add(positional[j + 1])
                if words[j].lower() == "auth" and j + 2 < len(words):
                    secret.add(positional[j + 2])  # AUTH user password
    elif program == "nmcli":
        for j in range(len(words) - 1):
            if words[j] in ("password", "wifi-sec.psk", "802-1x.password", "wifi-sec.wep-key0"):
                secret.add(positional[j + 1])
    elif program == "openssl":
        if words[:1] == ["passwd"] and len(words) > 1:
            secret.add(positional[-1])
    elif program == "xfreerdp" or program == "wlfreerdp":
        secret.update(i for i, a in enumerate(args) if a[:3].lower() == "/p:")
    return secret


_POSITIONAL_PROGRAMS: Final = frozenset({"htpasswd", "aws", "vault", "sqlplus", "rman", "expdp", "impdp", "sqlldr",
                                         "dgmgrl", "redis-cli", "nmcli", "openssl", "xfreerdp",
                                         "wlfreerdp"})
_KNOWN_PROGRAMS: Final = frozenset(PROGRAM_RULES) | _POSITIONAL_PROGRAMS
# Words that end one command of a shell command line and start the next
# (sh -c 'htpasswd -b f u PW && mysql ...'): positional rules stop there.
_SHELL_SEPARATORS: Final = frozenset({"&&", "||", "|", "|&", ";", "&"})
_SHELL_WORD: Final = re.compile(r"[;&|]++|[^\s;&|]++")


def _hide_after(value: str, sep: str) -> str:
    if not sep:
        return REDACTED if value else value
    head, found, rest = value.partition(sep)
    return f"{head}{sep}{REDACTED}" if found and rest else value


# -- the policy ---------------------------------------------------------------

class _BoundedSet(set[str]):
    """Strings known to pass a scan unchanged, bounded by their total length
    so the memory stays small whatever the workload. Only those: a string
    that was changed would keep its secret alive here."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def remember(self, text: str) -> None:
        if len(text) <= _UNCHANGED_ENTRY_LEN_MAX:
            self.chars += len(text)
            if self.chars > _UNCHANGED_CHARS_MAX:
                self.clear()
                self.chars = len(text)
            self.add(text)


def _pattern_replacer(pattern: re.Pattern[str]) -> Callable[[str], str]:
    """A user rule: with capture groups, what each participating group
    matched is replaced (Tetragon's redaction filters); without, the whole
    match. A rule that can match the empty string hides nothing there."""
    if not pattern.groups:
        return lambda text: pattern.sub(lambda m: REDACTED if m.end() > m.start() else "", text)

    def replace(m: re.Match[str]) -> str:
        start = m.start()
        out: list[str] = []
        pos = start
        for g in range(1, pattern.groups + 1):
            gs, ge = m.span(g)
            if gs < pos or ge <= gs:
                continue  # did not take part, empty, or nested in one already hidden
            out += (m.string[pos:gs], REDACTED)
            pos = ge
        out.append(m.string[pos:m.end()])
        return "".join(out)

    return lambda text: pattern.sub(replace, text)


class RedactionPolicy:
    """What of an exec's env and argv may leave the host.

    ``env_capture``: ``"all"`` keeps the env as is, ``"none"`` drops all of
    it (lineage reads the trace context before redaction), ``"redacted"``
    hides the values of secret-looking keys and scans every other value
    (``scan``). Trace context values are bounded (``TRACE_CONTEXT_MAX``, a
    tracestate by whole members: ``bounded_tracestate``) and scanned: those of the variables ``trace_context_names`` maps each
    field to (by default, the field's name). ``env_allow`` keys (exact
    case, as env keys are) are kept verbatim. Entries without ``=`` are
    kept.

    ``secret_key_pattern`` (a regex searched case-insensitively in names)
    replaces the default words. ``extra_patterns`` are user rules (see
    ``_pattern_replacer``), applied to every argument and scanned value.
    ``allow_patterns``: an argument or env value that one of them matches
    whole is left to the user rules alone (a known false positive). Invalid
    regexes raise ``re.error`` here, never while redacting.

    The policy memoizes per-name decisions and the env entries and argv
    elements that passed unchanged (all bounded); under the GIL, concurrent
    use is safe.
    """

    __slots__ = ("env_capture", "env_allow", "_trace_context_bounds", "_key_re", "_key_words", "_extra", "_allow", "_secret_names",
                 "_unchanged", "_unchanged_args")

    def __init__(
        self,
        env_capture: EnvCapture = "redacted",
        secret_key_pattern: str | None = None,
        extra_patterns: Sequence[str] = (),
        env_allow: Sequence[str] = (),
        allow_patterns: Sequence[str] = (),
        trace_context_names: Mapping[str, str] | None = None,
    ) -> None:
        if env_capture not in _ENV_MODES:
            raise ValueError(f"env_capture must be one of {', '.join(_ENV_MODES)}, not {env_capture!r}")
        self.env_capture = env_capture
        self.env_allow = frozenset(env_allow)
        self._trace_context_bounds = _trace_context_bounds(trace_context_names or {})
        if secret_key_pattern is None:
            self._key_re = _default_key_re()
            self._key_words: tuple[str, ...] = tuple(w.lower() for w in DEFAULT_SECRET_KEY_WORDS)
        else:
            self._key_re = re.compile(secret_key_pattern, re.IGNORECASE)
            self._key_words = ()
        self._extra = tuple(_pattern_replacer(re.compile(p)) for p in extra_patterns)
        self._allow = tuple(re.compile(p) for p in allow_patterns)
        self._secret_names: dict[str, bool] = {}
        self._unchanged = _BoundedSet()  # env entries
        self._unchanged_args = _BoundedSet()  # argv elements, scanned

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
            return []
        unchanged = self._unchanged
        # Most of an env is inherited from exec to exec: one C-level pass
        # settles the common case where every entry was seen before.
        if unchanged.issuperset(env):
            return list(env)
        out: list[str] = []
        append = out.append
        trace_context_bounds = self._trace_context_bounds
        for entry in env:
            if entry in unchanged:
                append(entry)
                continue
            key, eq, value = entry.partition("=")
            if not eq or key in self.env_allow:
                result = entry
            elif key in trace_context_bounds:
                result = f"{key}={self.scan(trace_context_bounds[key](value))}"
            elif self.is_secret_name(key) and not self._allowed(value):
                append(f"{key}={REDACTED}" if value else entry)
                continue
            else:
                result = f"{key}={self.scan(value)}"
            if result == entry:
                unchanged.remember(entry)
            append(result)
        return out

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A redacted copy of ``argv``, element for element.

        argv[0] is a program name: it is scanned, and never counts as a
        flag. A secret-looking flag without ``=`` (``--token``) hides the
        next element whatever it starts with, unless its name says it is
        not followed by the secret (``--password-stdin``, ``--token-file``).
        Program-aware options (``PROGRAM_RULES``) apply from the program's
        name on, also behind wrappers (``sudo``, ``env``, ``docker exec``);
        an argument holding a whole command line (``sh -c '...'``) is
        tokenized at white space and gets the same treatment.
        """
        seen = self._unchanged_args
        out = list(argv)
        for i, arg in enumerate(argv):
            if arg not in seen:
                out[i] = scanned = self.scan(arg)
                if scanned == arg:
                    seen.remember(arg)
        if len(out) > 1:
            self._flags(list(argv), out)
            for i in range(1, len(out)):
                arg = argv[i]
                if " " in arg and out[i] != REDACTED and (_COMMAND_HINT.search(arg) or _program_name(
                        arg.lstrip().partition(" ")[0]) in _KNOWN_PROGRAMS):
                    out[i] = self._command_line(out[i])
        return out

    def scan(self, text: str) -> str:
        """Every value rule, on one argument or env value: user rules, URL
        credentials, PEM blocks, token shapes, authorization schemes, JSON
        pairs, ``NAME=value`` and ``Name: value`` with a secret name."""
        for replace in self._extra:
            text = replace(text)
        if self._allowed(text):
            return text
        if _RARE_RULE_HINT.search(text.lower()):
            if "@" in text and "://" in text:
                text = _url_credentials(text)
            if "-----BEGIN " in text:
                text = _pem_blocks(text)
            text = _auth_schemes(_TOKEN_SHAPES.sub(REDACTED, text))
        if '"' in text and ":" in text:
            text = self._json_pairs(text)
        if "=" in text:
            text = self._assignments(text)
        if ":" in text:
            m = _HEADER.match(text)
            if m is not None and m.end() < len(text) and self.is_secret_name(m["name"]) \
                    and not text[m.end():].startswith(REDACTED):
                return text[:m.end()] + REDACTED
        return text

    def _flags(self, argv: list[str], out: list[str], shell: bool = False) -> None:
        """Flag-driven rules over one command's elements (argv[0] its
        program), writing into out. `shell`: the words of a shell command
        line, where ; & | separate commands (in an argv they are arguments)."""
        program = _program_name(argv[0])
        rule = PROGRAM_RULES.get(program)
        start = 1  # where the current program's arguments start
        subcommand_seen = False
        pending: str | None = None  # what of the next element is hidden, if anything
        command_starts = False  # the next word names a program (after a shell separator)
        for i in range(1, len(argv)):
            arg = argv[i]
            if shell and arg in _SHELL_SEPARATORS:
                self._positionals(program, argv, out, start, i)
                program, rule, start, subcommand_seen, pending = "", None, i + 1, False, None
                command_starts = True
                continue
            if command_starts and arg[:1] != "-":
                command_starts = False
                program, rule, start = _program_name(arg), PROGRAM_RULES.get(_program_name(arg)), i + 1
                continue
            if pending is not None:
                if not self._allowed(arg):
                    out[i] = _hide_after(arg, pending)
                # --token --api-key KEY: the second flag is hidden as the
                # first one's value, and still hides its own.
                pending = _ALL if arg[:1] == "-" and self._is_value_flag(arg) else None
                continue
            if arg[:1] != "-":
                name = _program_name(arg)
                if name in _KNOWN_PROGRAMS or name in _CONTEXT_ENDERS:
                    self._positionals(program, argv, out, start, i)
                    program, rule, start, subcommand_seen = name, PROGRAM_RULES.get(name), i + 1, False
                elif rule is not None and arg == rule.after:
                    subcommand_seen = True
                continue
            hit = rule.match(arg) if rule is not None and (rule.after is None or subcommand_seen) else None
            if hit is not None:
                sep, attached = hit
                if not attached:
                    pending = sep
                elif not self._allowed(attached):
                    out[i] = arg[:len(arg) - len(attached)] + _hide_after(attached, sep)
            elif self._is_value_flag(arg):
                pending = _ALL
        self._positionals(program, argv, out, start, len(argv))

    def _is_value_flag(self, arg: str) -> bool:
        """--token, -password: a flag whose value, the next argument, is secret."""
        if "=" in arg:
            return False
        name = arg.lstrip("-")
        return bool(name) and self.is_secret_name(name) and not _NOT_A_VALUE_FLAG.search(name)

    def _positionals(self, program: str, argv: list[str], out: list[str], start: int, end: int) -> None:
        if program in _POSITIONAL_PROGRAMS:
            for j in _positional_secrets(program, argv[start:end], self.is_secret_name):
                if not self._allowed(argv[start + j]):
                    out[start + j] = _hide_positional(program, argv[start + j])

    def _command_line(self, text: str) -> str:
        """A command line inside one argument: its words (separated by white
        space, with the shell's ; & | as words of their own) go through the
        flag rules; the text between them is kept."""
        spans = [m.span() for m in _SHELL_WORD.finditer(text)]
        words = [text[s:e] for s, e in spans]
        out = list(words)
        self._flags(words, out, shell=True)
        if out == words:
            return text
        pieces: list[str] = []
        pos = 0
        for (s, e), new in zip(spans, out):
            pieces += (text[pos:s], new)
            pos = e
        pieces.append(text[pos:])
        return "".join(pieces)

    def _allowed(self, text: str) -> bool:
        return bool(self._allow) and any(p.fullmatch(text) for p in self._allow)

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
        return self._key_matches(name)

    def _key_matches(self, name: str) -> bool:
        return self._key_re.search(name) is not None


    def _json_pairs(self, text: str) -> str:
        def pair(m: re.Match[str]) -> str:
            if not m["value"] or not self.is_secret_name(m["name"]):
                return m.group()
            return f'{m.group()[:m.start("value") - m.start()]}{REDACTED}"'

        return _JSON_PAIR.sub(pair, text)

    def _assignments(self, text: str) -> str:
        pieces: list[str] = []
        done = 0  # text[:done] is settled
        for m in _ASSIGNMENT.finditer(text):
            start, value_start = m.start(), m.end()
            name = text[start:value_start - 1].rstrip(" \t").lstrip("-")
            # Inside a value, PWD= is a connection string's password, not
            # the working directory.
            if start < done or not (self.is_secret_name(name) or (
                    name.upper() in _NEVER_SECRET_NAMES and self._key_matches(name))):
                continue
            before = text[start - 1] if start else ""
            if before and before in "?&":
                # A URL query parameter: its value ends at the next one.
                end = _QUERY_VALUE_END.search(text, value_start)
                value_end = end.start() if end else len(text)
            elif (before in "; \t" if start else text[0] != "-") \
                    and text[value_start:value_start + 1] not in ('"', "'", "{") and ";" in text[value_start:]:
                # A connection string (Password=...;Database=...)
                value_end = text.index(";", value_start)
            else:
                value_end = len(text)
            if value_end > value_start and not text.startswith(REDACTED, value_start):
                pieces += (text[done:value_start], REDACTED)
                done = value_end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)


def _hide_positional(program: str, arg: str) -> str:
    if program in ("sqlplus", "rman", "expdp", "impdp", "sqlldr", "dgmgrl"):
        user, _, rest = arg.partition("/")
        _, at, connect = rest.partition("@")
        return f"{user}/{REDACTED}{at}{connect}"
    if program in ("xfreerdp", "wlfreerdp"):
        return arg[:3] + REDACTED
    return REDACTED


def _url_credentials(text: str) -> str:
    """scheme://user:password@host and scheme://token@host. A password
    runs to the token's last '@' (passwords hold '@', '/', '?', '#' raw);
    host:port/path@x is no password. Each character is looked at a bounded
    number of times: a token without '@' is passed whole."""
    pieces: list[str] = []
    done = 0
    pos = 0
    while True:
        m = _URL_SCHEME.search(text, pos)
        if m is None:
            break
        begin = m.end()
        end_m = _URL_TOKEN_END.search(text, begin)
        token_end = end_m.start() if end_m else len(text)
        at = text.rfind("@", begin, token_end)
        if at < 0:
            pos = token_end
            continue
        head = text[begin:at]
        auth_end_m = _AUTHORITY_END.search(head)
        auth_end = auth_end_m.start() if auth_end_m else len(head)
        colon = head.find(":", 0, auth_end)
        hidden: tuple[int, int] | None = None
        if colon >= 0:
            after = head[colon + 1:auth_end]
            if not (after.isdigit() and auth_end < len(head)):  # host:port/path@...: no credentials
                if colon + 1 < len(head):
                    hidden = (begin + colon + 1, at)
        else:
            inner_at = head.rfind("@", 0, auth_end)
            if auth_end == len(head):
                inner_at = len(head)
            if inner_at > 0:
                hidden = (begin, begin + inner_at)
                at = begin + inner_at
        # Already hidden whole by a user rule: kept; hidden in part: hidden whole.
        if hidden is not None and text[hidden[0]:hidden[1]] != REDACTED:
            pieces += (text[done:hidden[0]], REDACTED)
            done = hidden[1]
        pos = max(at + 1, m.end())
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _pem_blocks(text: str) -> str:
    """A PEM block's body, to its END line or, cut short, to the end."""
    pieces: list[str] = []
    done = 0
    for m in _PEM_BEGIN.finditer(text):
        if m.start() < done:
            continue
        end = text.find(_PEM_END, m.end())
        pieces += (text[done:m.end()], REDACTED)
        done = end if end >= 0 else len(text)
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _auth_schemes(text: str) -> str:
    def cred(m: re.Match[str]) -> str:
        value = m["cred"]
        if value.startswith(REDACTED) or not _CREDENTIAL_LIKE.search(value):
            return m.group()
        return m.group()[:m.start("cred") - m.start()] + REDACTED

    return _AUTH_SCHEME.sub(cred, text)
