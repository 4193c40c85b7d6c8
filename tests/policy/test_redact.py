"""Secret redaction of env and argv (otel_exec.policy.redact)."""
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_exec.policy.redact import (
    DEFAULT_SECRET_KEY_WORDS,
    REDACTED,
    TRACE_CONTEXT_MAX,
    WORD_PART_KEY_WORDS,
    RedactionPolicy,
    bounded_tracestate,
)

TP = "TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def policy():
    return RedactionPolicy()


def test_marker_and_word_list_are_public():
    assert REDACTED == "[REDACTED]"
    assert set(WORD_PART_KEY_WORDS) <= set(DEFAULT_SECRET_KEY_WORDS)
    assert {"TOKEN", "SECRET", "PASSWORD", "KEY", "DSN"} <= set(DEFAULT_SECRET_KEY_WORDS)


@pytest.mark.parametrize("key", [
    "API_TOKEN", "GITHUB_TOKEN", "token", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "PASSWD",
    "GPG_PASSPHRASE", "GOOGLE_APPLICATION_CREDENTIALS", "AUTH", "OAUTH_CLIENT", "HTTP_AUTHORIZATION",
    "COOKIE_JAR", "SESSION_ID", "PRIVATE", "REQUEST_SIGNATURE", "OPENAI_APIKEY", "API_KEY", "KEY",
    "SSH_KEY", "SSH_KEYS", "AWS_ACCESS_KEY_ID", "PRIVATE_KEY", "apiKey", "accessKeyId", "secret-key",
    "db.key", "MYSQL_PWD", "DB_PWD", "SENTRY_DSN", "dsn", "KEY2",
])
def test_secret_env_keys(policy, key):
    assert policy.env([f"{key}=abc"]) == [f"{key}={REDACTED}"]


@pytest.mark.parametrize("key", [
    "PWD", "OLDPWD", "PATH", "HOME", "KEYBOARD", "XKB_KEYMAP", "MONKEY", "keyboard", "Keyboard",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "AUTHORS", "LANG", "SHELL", "DSNX",
])
def test_plain_env_keys(policy, key):
    assert policy.env([f"{key}=abc"]) == [f"{key}=abc"]


def test_env_redacted_mode(policy):
    env = ["PATH=/usr/bin", "API_TOKEN=abc", TP, "TRACESTATE=a=b", "BAGGAGE=k=v",
           "noequals", "EMPTY_TOKEN=", "PWD=/home/x"]
    assert policy.env(env) == ["PATH=/usr/bin", f"API_TOKEN={REDACTED}", TP, "TRACESTATE=a=b",
                               "BAGGAGE=k=v", "noequals", "EMPTY_TOKEN=", "PWD=/home/x"]


def test_env_value_keeps_equals_signs(policy):
    assert policy.env(["SECRET=a=b=c", "OPTS=a=b"]) == [f"SECRET={REDACTED}", "OPTS=a=b"]


def test_env_all_and_none():
    env = ["API_TOKEN=abc", "PATH=/bin", TP, "DATABASE_URL=postgres://u:p@h/db", "bare"]
    assert RedactionPolicy("all").env(env) == env
    # none: no environment attribute at all (lineage reads the trace
    # context before redaction, see test_spans).
    assert RedactionPolicy("none").env(env) == []
    assert RedactionPolicy("none", env_allow=["PATH"]).env(env) == []


def test_env_allow_keeps_secret_looking_keys_verbatim():
    p = RedactionPolicy(env_allow=["SSH_AUTH_SOCK", "DATABASE_URL"])
    env = ["SSH_AUTH_SOCK=/run/agent", "DATABASE_URL=postgres://u:p@h/db", "ssh_auth_sock=x"]
    assert p.env(env) == ["SSH_AUTH_SOCK=/run/agent", "DATABASE_URL=postgres://u:p@h/db",
                          f"ssh_auth_sock={REDACTED}"]


def test_trace_context_is_bounded_and_scanned_like_any_value():
    odd = "TRACESTATE=vendor=https://a:b@c"
    assert RedactionPolicy().env([odd, TP]) == [f"TRACESTATE=vendor=https://a:{REDACTED}@c", TP]
    assert RedactionPolicy("all").env([odd, TP]) == [odd, TP]
    assert RedactionPolicy("none").env([odd, TP]) == []
    baggage = "BAGGAGE=user=me,password=hunter2," + "k=v," * 5000
    (out,) = RedactionPolicy().env([baggage])
    assert "hunter2" not in out and len(out) <= len("BAGGAGE=") + 8192
    # A tracestate loses whole members (bounded_tracestate), never part of one.
    (out,) = RedactionPolicy().env(["TRACESTATE=" + "a" * 2000])
    assert out == "TRACESTATE="
    (out,) = RedactionPolicy().env(["TRACESTATE=k=" + "a" * 400 + ",l=" + "b" * 200])
    assert out == "TRACESTATE=k=" + "a" * 400


@pytest.mark.parametrize("value,expected", [
    ("postgres://user:pw@host/db", f"postgres://user:{REDACTED}@host/db"),
    ("postgres://user:p@ss@host:5432/db", f"postgres://user:{REDACTED}@host:5432/db"),
    ("https://ghp_abc123@github.com/o/r.git", f"https://{REDACTED}@github.com/o/r.git"),
    ("http://user:@host/", "http://user:@host/"),
    ("https://host/path/@scope/pkg", "https://host/path/@scope/pkg"),
    ("mailto:someone@example.com", "mailto:someone@example.com"),
    ("a http://x:y@h b redis://:pw@r:6379", f"a http://x:{REDACTED}@h b redis://:{REDACTED}@r:6379"),
])
def test_url_credentials_in_env_values(policy, value, expected):
    assert policy.env([f"DATABASE_URL={value}"]) == [f"DATABASE_URL={expected}"]


@pytest.mark.parametrize("argv,expected", [
    (["mysql", "--password=x"], ["mysql", f"--password={REDACTED}"]),
    (["gh", "--token", "x", "repo"], ["gh", "--token", REDACTED, "repo"]),
    (["tool", "-token", "x"], ["tool", "-token", REDACTED]),
    (["docker", "login", "--password-stdin", "-u", "me"], ["docker", "login", "--password-stdin", "-u", "me"]),
    (["tool", "--token"], ["tool", "--token"]),
    (["tool", "--token", "--api-key", "k"], ["tool", "--token", REDACTED, REDACTED]),
    (["tool", "--token", "-x"], ["tool", "--token", REDACTED]),  # whatever the value starts with
    (["mysql", "-p", "secret"], ["mysql", "-p", REDACTED]),
    (["env", "API_TOKEN=abc", "cmd"], ["env", f"API_TOKEN={REDACTED}", "cmd"]),
    (["docker", "run", "-e", "PASSWORD=x", "img"], ["docker", "run", "-e", f"PASSWORD={REDACTED}", "img"]),
    (["helm", "--set", "db.password=x"], ["helm", "--set", f"db.password={REDACTED}"]),
    (["helm", "--set", "a=1,db.password=x"], ["helm", "--set", f"a=1,db.password={REDACTED}"]),
    (["helm", "--set=db.password=x"], ["helm", f"--set=db.password={REDACTED}"]),
    (["java", "-Ddb.password=x", "-jar", "a.jar"], ["java", f"-Ddb.password={REDACTED}", "-jar", "a.jar"]),
    (["curl", "-H", "Authorization: Bearer xyz", "https://h"],
     ["curl", "-H", f"Authorization: {REDACTED}", "https://h"]),
    (["curl", "-H", "Cookie: session=abc; x=y"], ["curl", "-H", f"Cookie: {REDACTED}"]),
    (["curl", "-H", "X-Api-Key:abc"], ["curl", "-H", f"X-Api-Key:{REDACTED}"]),
    (["tool", "--password=session:x"], ["tool", f"--password={REDACTED}"]),
    (["curl", "-H", "Accept: text/html"], ["curl", "-H", "Accept: text/html"]),
    (["http", "example.org", "Authorization:Bearer x"], ["http", "example.org", f"Authorization:{REDACTED}"]),
    (["wget", "--header=Authorization: Basic Zm9v"], ["wget", f"--header=Authorization: {REDACTED}"]),
    (["git", "clone", "https://user:pw@github.com/o/r"], ["git", "clone", f"https://user:{REDACTED}@github.com/o/r"]),
    (["curl", "https://h/x?api_key=abc&page=2#frag"], ["curl", f"https://h/x?api_key={REDACTED}&page=2#frag"]),
    (["curl", "https://h/x?a=1&token=t&sig=s"], ["curl", f"https://h/x?a=1&token={REDACTED}&sig={REDACTED}"]),
    (["ls", "-la", "/tmp"], ["ls", "-la", "/tmp"]),
    (["git", "commit", "-m", "fix: PASSWORD handling"], ["git", "commit", "-m", "fix: PASSWORD handling"]),
    (["env", "GIT_AUTHOR_NAME=me", "KEYBOARD=us"], ["env", "GIT_AUTHOR_NAME=me", "KEYBOARD=us"]),
    (["tool", "--token="], ["tool", "--token="]),
    (["tool", "--token", ""], ["tool", "--token", ""]),
    (["tool", "--pwd", "/srv"], ["tool", "--pwd", "/srv"]),
])
def test_argv(policy, argv, expected):
    assert policy.argv(argv) == expected


def test_argv0_only_loses_url_credentials(policy):
    assert policy.argv(["--token", "x"]) == ["--token", "x"]  # argv[0] is no flag, but is scanned
    assert policy.argv(["API_TOKEN=x"]) == [f"API_TOKEN={REDACTED}"]
    assert policy.argv(["https://u:p@h/bin"]) == [f"https://u:{REDACTED}@h/bin"]
    assert RedactionPolicy(extra_patterns=["prog"]).argv(["prog", "prog"]) == [REDACTED, REDACTED]


def test_argv_is_not_mutated(policy):
    argv = ["env", "API_TOKEN=abc"]
    policy.argv(argv)
    assert argv == ["env", "API_TOKEN=abc"]


def test_extra_patterns():
    p = RedactionPolicy(extra_patterns=[r"ghp_[A-Za-z0-9]+", r"(?i)hunter2"])
    assert p.argv(["git", "push", "ghp_abc123", "x", "HUNTER2!"]) == \
        ["git", "push", REDACTED, "x", f"{REDACTED}!"]
    assert p.env(["NOTE=token ghp_zz here", "PATH=/bin"]) == [f"NOTE=token {REDACTED} here", "PATH=/bin"]
    # A pattern that can match nothing does not fill the string with markers.
    assert RedactionPolicy(extra_patterns=["z*"]).argv(["a", "bzzc"]) == ["a", f"b{REDACTED}c"]


def test_invalid_pattern_fails_at_construction():
    with pytest.raises(re.error):
        RedactionPolicy(extra_patterns=["("])
    with pytest.raises(ValueError):
        RedactionPolicy("some")  # type: ignore[arg-type]


def test_custom_secret_key_pattern():
    p = RedactionPolicy(secret_key_pattern=r"^internal[_-]")
    assert p.env(["INTERNAL_X=1", "API_TOKEN=2"]) == [f"INTERNAL_X={REDACTED}", "API_TOKEN=2"]
    assert p.argv(["x", "--internal-id", "7"]) == ["x", "--internal-id", REDACTED]
    # The working directory is never a secret, whatever the pattern.
    assert RedactionPolicy(secret_key_pattern="PWD").env(["PWD=/a", "OLDPWD=/b", "MY_PWD=c"]) == \
        ["PWD=/a", "OLDPWD=/b", f"MY_PWD={REDACTED}"]


def test_repeated_env_is_stable_and_caches_hold_no_secret(policy):
    env = ["PATH=/bin", "API_TOKEN=abc", "URL=http://u:pw@h/", "HOME=/root"]
    first = policy.env(env)
    assert policy.env(list(env)) == first == \
        ["PATH=/bin", f"API_TOKEN={REDACTED}", f"URL=http://u:{REDACTED}@h/", "HOME=/root"]
    assert "API_TOKEN=abc" not in policy._unchanged
    assert not any("pw" in e for e in policy._unchanged)


def test_huge_and_odd_inputs(policy):
    huge = "a" * 1_000_000
    t = time.perf_counter()
    assert policy.argv(["x", huge + "=" + huge, huge + ":" + huge, "h://" + huge + "@" + huge]) == \
        ["x", huge + "=" + huge, huge + ":" + huge, f"h://{REDACTED}@{huge}"]
    assert policy.env(["K" + huge + "=" + "@" * 100_000]) == ["K" + huge + "=" + "@" * 100_000]
    assert time.perf_counter() - t < 5  # linear scans, not quadratic backtracking
    odd = ["\udcff\ud800", "--token", "\\xff\\xfe", "API_TOKEN=\udcff"]
    assert policy.argv(odd) == ["\udcff\ud800", "--token", REDACTED, f"API_TOKEN={REDACTED}"]
    assert policy.env(["\ud800=\udcff", "API_TOKEN=\\x00"]) == ["\ud800=\udcff", f"API_TOKEN={REDACTED}"]


text = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)  # lone surrogates too
specials = st.sampled_from(["=", ":", "@", "-", "--", "://", "?", "&", "TOKEN", "key", "Key", "PWD",
                            "TRACEPARENT", "Authorization", " ", "[REDACTED]"])
chunks = st.lists(st.one_of(text, specials), max_size=8).map("".join)
policies = st.builds(
    RedactionPolicy,
    env_capture=st.sampled_from(["none", "redacted", "all"]),
    extra_patterns=st.sampled_from([(), (r"ab+",), (r"x*",), (r"(a)|(b)?(c*)",), (r"k=(\w*)",)]),
    env_allow=st.sampled_from([(), ("API_TOKEN",)]),
    allow_patterns=st.sampled_from([(), (r".*",), (r"a+",)]),
)


@settings(max_examples=400, deadline=None)
@given(policies, st.lists(chunks, max_size=10), st.lists(chunks, max_size=10), st.text(max_size=40))
def test_property_never_raises_and_keeps_invariants(p, argv, env, tp_value):
    tp = f"TRACEPARENT={tp_value}"
    out_argv = p.argv(argv)
    assert len(out_argv) == len(argv)
    assert all(isinstance(a, str) for a in out_argv)
    out_env = p.env([*env, tp])
    if p.env_capture == "all":
        assert out_env == [*env, tp]
    elif p.env_capture == "none":
        assert out_env == []
    else:
        assert out_env[-1].startswith("TRACEPARENT=")
        assert all(len(e) <= len("TRACEPARENT=") + TRACE_CONTEXT_MAX["TRACEPARENT"] + len(REDACTED) * 8
                   for e in out_env if e.startswith("TRACEPARENT="))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=40))
def test_property_secret_values_never_show(value):
    p = RedactionPolicy()
    assert p.env([f"API_TOKEN={value}"]) == [f"API_TOKEN={REDACTED}"]
    assert p.argv(["x", f"--password={value}", "--token", "v" + value]) == \
        ["x", f"--password={REDACTED}", "--token", REDACTED]
    # Whatever the value starts with ("-", "-----BEGIN", white space).
    assert p.argv(["x", "--token", value])[2] == REDACTED
    assert p.argv(["mysql", "-p", value])[2] == REDACTED


# The default key regex is built once, at import: these tests build it again
# through the same helpers so that what the helpers produce is checked too
# (a mutation tool that forks after import would otherwise never see a change).
_SECRET_NAMES = ["API_TOKEN", "api_token", "Api_Token", "db.password", "MASTERKEY", "OAUTH_CLIENT", "AUTH",
                 "API_KEY", "api_key", "apiKey", "ApiKey", "SSH_KEYS", "ssh_keys", "sshKeys", "KEY2", "db.key",
                 "MYSQL_PWD", "SENTRY_DSN", "dsn", "DB_PASS", "GITLAB_PAT", "PW", "REQUEST_SIG", "JWT",
                 "Key", "x-Key", "signingKeys"]
_PLAIN_NAMES = ["KEYBOARD", "keyboard", "Keyboard", "XKB_KEYMAP", "MONKEY", "monkey", "PATH", "path", "HOME",
                "GIT_AUTHOR_NAME", "AUTHORS", "author", "DSNX", "PASSAGE", "passage", "Passage", "PATCH",
                "SIGNAL_X", "KEYs1", "KEYSX", "KEYSTONE", "keystone"]


@pytest.mark.parametrize("name", _SECRET_NAMES)
def test_the_default_key_pattern_built_anew_finds_secret_names(name):
    from otel_exec.policy import redact
    assert re.compile(redact._default_key_pattern(), re.ASCII).search(name), name


@pytest.mark.parametrize("name", _PLAIN_NAMES)
def test_the_default_key_pattern_built_anew_passes_plain_names(name):
    from otel_exec.policy import redact
    assert not re.compile(redact._default_key_pattern(), re.ASCII).search(name), name


def test_the_built_pattern_is_the_one_in_use():
    from otel_exec.policy import redact
    assert redact._default_key_pattern() == redact.DEFAULT_SECRET_KEY_PATTERN
    for name in _SECRET_NAMES:
        assert RedactionPolicy().is_secret_name(name), name
    for name in _PLAIN_NAMES:
        assert not RedactionPolicy().is_secret_name(name), name


R = REDACTED


@pytest.mark.parametrize("argv,expected", [
    # htpasswd -b: the password is the last positional argument.
    (["htpasswd", "-b", "/etc/htpw", "me", "s3cret"], ["htpasswd", "-b", "/etc/htpw", "me", R]),
    (["htpasswd", "-nb", "me", "s3cret"], ["htpasswd", "-nb", "me", R]),
    (["htpasswd", "-c", "/etc/htpw", "me"], ["htpasswd", "-c", "/etc/htpw", "me"]),
    (["htpasswd", "--bogus", "/etc/htpw", "me"], ["htpasswd", "--bogus", "/etc/htpw", "me"]),
    (["sudo", "htpasswd", "-b", "f", "me", "pw"], ["sudo", "htpasswd", "-b", "f", "me", R]),
    # aws configure set NAME VALUE, only when NAME looks secret
    (["aws", "configure", "set", "aws_secret_access_key", "wJalr"],
     ["aws", "configure", "set", "aws_secret_access_key", R]),
    (["aws", "--profile", "p", "configure", "set", "aws_session_token", "tok"],
     ["aws", "--profile", "p", "configure", "set", "aws_session_token", R]),
    (["aws", "configure", "set", "region", "us-east-1"], ["aws", "configure", "set", "region", "us-east-1"]),
    (["aws", "configure", "set"], ["aws", "configure", "set"]),
    (["aws", "s3", "configure", "token"], ["aws", "s3", "configure", "token"]),
    # vault login TOKEN; a method's key=value pairs are not the token
    (["vault", "login", "s.abcdef"], ["vault", "login", R]),
    (["vault", "login", "-method=userpass", "username=me"], ["vault", "login", "-method=userpass", "username=me"]),
    (["vault", "login"], ["vault", "login"]),
    (["vault", "read", "login"], ["vault", "read", "login"]),
    # Oracle tools: user/password[@connect]; @script and /nolog are no password
    (["sqlplus", "scott/tiger@orcl"], ["sqlplus", f"scott/{R}@orcl"]),
    (["sqlplus", "scott/tiger"], ["sqlplus", f"scott/{R}"]),
    (["sqlplus", "-s", "scott/tiger@//db:1521/orcl", "@/path/script.sql"],
     ["sqlplus", "-s", f"scott/{R}@//db:1521/orcl", "@/path/script.sql"]),
    (["sqlplus", "/nolog"], ["sqlplus", "/nolog"]),
    (["sqlplus", "/", "as", "sysdba"], ["sqlplus", "/", "as", "sysdba"]),
    (["rman", "target", "sys/pw@db"], ["rman", "target", f"sys/{R}@db"]),
    (["expdp", "u/p", "directory=d"], ["expdp", f"u/{R}", "directory=d"]),
    (["sh", "-c", "sqlplus scott/tiger@orcl"], ["sh", "-c", f"sqlplus scott/{R}@orcl"]),
    # redis-cli AUTH [user] password, CONFIG SET requirepass/masterauth
    (["redis-cli", "AUTH", "pw"], ["redis-cli", "AUTH", R]),
    (["redis-cli", "auth", "user", "pw"], ["redis-cli", "auth", R, R]),
    (["redis-cli", "-h", "h", "config", "set", "requirepass", "pw", "extra"],
     ["redis-cli", "-h", "h", "config", "set", "requirepass", R, "extra"]),
    (["redis-cli", "config", "set", "masterauth", "pw"], ["redis-cli", "config", "set", "masterauth", R]),
    (["redis-cli", "get", "auth"], ["redis-cli", "get", "auth"]),
    (["redis-cli", "AUTH"], ["redis-cli", "AUTH"]),
    # nmcli's secret properties
    (["nmcli", "dev", "wifi", "connect", "home", "password", "pw"],
     ["nmcli", "dev", "wifi", "connect", "home", "password", R]),
    (["nmcli", "con", "modify", "c", "wifi-sec.psk", "pw", "802-1x.password", "pw2", "wifi-sec.wep-key0", "k"],
     ["nmcli", "con", "modify", "c", "wifi-sec.psk", R, "802-1x.password", R, "wifi-sec.wep-key0", R]),
    (["nmcli", "password"], ["nmcli", "password"]),
    # openssl passwd PASSWORD
    (["openssl", "passwd", "-1", "pw"], ["openssl", "passwd", "-1", R]),
    (["openssl", "passwd"], ["openssl", "passwd"]),
    (["openssl", "enc", "passwd", "x"], ["openssl", "enc", "passwd", "x"]),
    (["openssl", "x509", "-in", "a/b"], ["openssl", "x509", "-in", "a/b"]),
    # FreeRDP's /p:password, any case; /pw: is another option
    (["xfreerdp", "/u:me", "/p:pw", "/v:h"], ["xfreerdp", "/u:me", f"/p:{R}", "/v:h"]),
    (["wlfreerdp", "/P:pw"], ["wlfreerdp", f"/P:{R}"]),
    (["xfreerdp", "/pw:x"], ["xfreerdp", "/pw:x"]),
])
def test_positional_secrets_of_known_programs(policy, argv, expected):
    assert policy.argv(argv) == expected


@pytest.mark.parametrize("argv,expected", [
    (["curl", "--user=me:pw", "https://h"], ["curl", f"--user=me:{R}", "https://h"]),
    (["curl", "-ume:pw"], ["curl", f"-ume:{R}"]),
    (["curl", "--user", "me:pw"], ["curl", "--user", f"me:{R}"]),
    (["curl", "-u", "me"], ["curl", "-u", "me"]),  # no password given: curl prompts
    (["curl", "--user-agent=x:y", "--user-agent", "a:b"], ["curl", "--user-agent=x:y", "--user-agent", "a:b"]),
    (["curl", "--user:x"], ["curl", "--user:x"]),
    (["curl", "--user="], ["curl", "--user="]),
    (["7z", "a", "-pSECRET", "x.7z"], ["7z", "a", f"-p{R}", "x.7z"]),
    (["7z", "a", "-p", "x.7z"], ["7z", "a", "-p", "x.7z"]),  # a lone -p prompts
    (["smbclient", "-U", "me%pw", "//h/s"], ["smbclient", "-U", f"me%{R}", "//h/s"]),
    (["smbclient", "-Ume%pw"], ["smbclient", f"-Ume%{R}"]),
    (["smbclient", "--user=me%pw"], ["smbclient", f"--user=me%{R}"]),
    (["smbclient", "-U", "me"], ["smbclient", "-U", "me"]),
    (["lftp", "-u", "me,pw", "host"], ["lftp", "-u", f"me,{R}", "host"]),
    (["docker", "run", "-p", "8080:80", "img"], ["docker", "run", "-p", "8080:80", "img"]),
    (["docker", "-p", "x", "login"], ["docker", "-p", "x", "login"]),
    (["docker", "login", "-p", "pw", "reg"], ["docker", "login", "-p", R, "reg"]),
    (["mysql", "-psecret", "db"], ["mysql", f"-p{R}", "db"]),
    (["mysql", "-p"], ["mysql", "-p"]),
    (["keytool", "-storepass", "pw", "-keypass", "kp"], ["keytool", "-storepass", R, "-keypass", R]),
    (["openssl", "enc", "-k", "pw", "-pass", "pass:x"], ["openssl", "enc", "-k", R, "-pass", R]),
    (["sshpass", "-p", "pw", "ssh", "-p", "22", "h"], ["sshpass", "-p", R, "ssh", "-p", "22", "h"]),
    (["sh", "-c", "a  --token  x  y"], ["sh", "-c", f"a  --token  {R}  y"]),  # the spacing is kept
])
def test_program_options_attached_separate_and_partial(policy, argv, expected):
    assert policy.argv(argv) == expected


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----"
PEM_HIDDEN = f"-----BEGIN RSA PRIVATE KEY-----{R}-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize("text,expected", [
    (PEM, PEM_HIDDEN),
    (f"x {PEM} y {PEM}", f"x {PEM_HIDDEN} y {PEM_HIDDEN}"),
    ("-----BEGIN CERTIFICATE-----\nMIIcut", f"-----BEGIN CERTIFICATE-----{R}"),  # cut short: to the end
    ("a-----BEGIN RSA PRIVATE KEY----------BEGIN RSA PRIVATE KEY-----b", f"a-----BEGIN RSA PRIVATE KEY-----{R}"),
    ("-----BEGIN x-----", "-----BEGIN x-----"),
])
def test_pem_block_bodies(policy, text, expected):
    assert policy.scan(text) == expected


def test_user_rule_groups_that_do_not_take_part_or_are_nested():
    p = RedactionPolicy(extra_patterns=[r"id=(\d+)-(\d+)?", r"x*", r"(a)(b)?", r"((c)d)"])
    assert p.scan("id=12-34 id=5-") == f"id={R}-{R} id={R}-"
    assert p.scan("zzz") == "zzz"  # x* matches empty everywhere: nothing hidden
    assert p.scan("ab a") == f"{R}{R} {R}"
    assert p.scan("cd") == R  # the inner group sits in the outer one


@pytest.mark.parametrize("text,expected", [
    ("see https://example.org/x and https://tok123@github.com/r",
     f"see https://example.org/x and https://{R}@github.com/r"),  # a URL without '@' ends nothing
    ("me@host.com https://example.org/x", "me@host.com https://example.org/x"),
    ("https://user:pa:ss@host/", f"https://user:{R}@host/"),  # the password starts at the first ':'
    ("https://u:1234@host/", f"https://u:{R}@host/"),  # all digits, but no path follows: a password
    ("https://host:8080/path@x", "https://host:8080/path@x"),
    ("https://h:1/p@x", "https://h:1/p@x"),
    ("https://tok@en@host/p", f"https://{R}@host/p"),
    ("https://host/a@b", "https://host/a@b"),
    ("https://tok@host/a@b", f"https://{R}@host/a@b"),
    ("https://t@host/a@b", f"https://{R}@host/a@b"),
    ("https://@host/a@b", "https://@host/a@b"),
    ("https://a@b@host/x@y", f"https://{R}@host/x@y"),
    (f"{R} https://u:pw@h", f"{R} https://u:{R}@h"),
    ("https://u:pw@h https://v:pw2@h2", f"https://u:{R}@h https://v:{R}@h2"),
])
def test_url_credentials_in_one_value(policy, text, expected):
    assert policy.scan(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Server=h;Password=pw;Database=d", f"Server=h;Password={R};Database=d"),  # a connection string
    ("Password=pw;Database=d", f"Password={R};Database=d"),
    ("x Password=pw;y", f"x Password={R};y"),
    ("-Password=pw;x", f"-Password={R}"),  # an option: its value runs to the end
    ("a,Password=pw;y", f"a,Password={R}"),
    ('Password="p;w";x', f"Password={R}"),  # quoted: not a connection string
    ("u?token=abc&x=1#f", f"u?token={R}&x=1#f"),  # a query parameter
    (f"Password={R};Password=x", f"Password={R};Password={R}"),
    ("OPTS XPW=abc", "OPTS XPW=abc"),  # PW inside a word
])
def test_assignments_inside_a_value(policy, text, expected):
    assert policy.scan(text) == expected


@pytest.mark.parametrize("argv,expected", [
    (["my prog --token x", "a"], ["my prog --token x", "a"]),  # argv[0] is a name, never a command line
    (["xargs", "mysql -p secret"], ["xargs", f"mysql -p {R}"]),
    (["sh", "-c", "tool --token x"], ["sh", "-c", f"tool --token {R}"]),  # an unknown program, a flag in it
    (["sh", "-c", "  sqlplus scott/tiger"], ["sh", "-c", f"  sqlplus scott/{R}"]),
])
def test_command_lines_inside_an_argument(policy, argv, expected):
    assert policy.argv(argv) == expected


def test_the_memo_of_unchanged_arguments_stays_bounded():
    from otel_exec.policy import redact
    p = RedactionPolicy()
    args = [f"{i:06d}" + "a" * 4000 for i in range(600)]  # ~2.4 MB of distinct, unchanged arguments
    for i in range(0, 600, 50):
        assert p.argv(["prog", *args[i:i + 50]]) == ["prog", *args[i:i + 50]]
    memo = p._unchanged_args
    assert sum(map(len, memo)) <= redact._UNCHANGED_CHARS_MAX and memo.chars == sum(map(len, memo))
    assert args[-1] in memo and args[0] not in memo
    too_long = "b" * (redact._UNCHANGED_ENTRY_LEN_MAX + 1)
    p.argv(["prog", too_long])
    assert too_long not in memo and "b" * redact._UNCHANGED_ENTRY_LEN_MAX not in memo
    exact = "c" * redact._UNCHANGED_ENTRY_LEN_MAX
    p.argv(["prog", exact])
    assert exact in memo


def test_trace_context_follows_the_configured_variable_names():
    """--traceparent-env/--tracestate-env: the renamed variables get the
    trace context treatment (bounded, scanned, never hidden for their name);
    the default names become ordinary variables."""
    p = RedactionPolicy(trace_context_names={"TRACEPARENT": "CI_TRACE_TOKEN", "TRACESTATE": "CI_STATE"})
    tp_value = TP.partition("=")[2]
    state = "k=" + "a" * 400 + ",l=" + "b" * 200
    out = p.env([f"CI_TRACE_TOKEN={tp_value}" + "0" * 300, f"CI_STATE={state}", f"TRACESTATE={state}",
                 "CI_STATE_X=https://u:pw@h", "BAGGAGE=k=v"])
    assert out == [f"CI_TRACE_TOKEN={tp_value}" + "0" * (TRACE_CONTEXT_MAX["TRACEPARENT"] - len(tp_value)),
                   "CI_STATE=k=" + "a" * 400, f"TRACESTATE={state}", f"CI_STATE_X=https://u:{REDACTED}@h",
                   "BAGGAGE=k=v"]
    # An ordinary secret-named variable is hidden; the same name as a carrier is not.
    assert RedactionPolicy().env([f"CI_TRACE_TOKEN={tp_value}"]) == [f"CI_TRACE_TOKEN={REDACTED}"]


def _member(key: str, size: int) -> str:
    """A tracestate list member of exactly `size` characters."""
    return f"{key}=" + "v" * (size - len(key) - 1)


def test_tracestate_within_the_limits_is_kept_as_it_came() -> None:
    one = _member("a", 512)
    assert bounded_tracestate(one) == one
    two = _member("a", 300) + "," + _member("b", 211)  # 512 with the comma
    assert len(two) == 512 and bounded_tracestate(two) == two
    members = ",".join(f"k{i}=1" for i in range(32))
    assert bounded_tracestate(members) == members
    spaced = "a=1 , ,b=2"  # white space and empty members are the sender's business until a cut
    assert bounded_tracestate(spaced) == spaced
    assert bounded_tracestate("") == ""


def test_tracestate_over_512_characters_loses_whole_entries_from_the_end() -> None:
    # 513 characters: the last member goes whole, never a character of it.
    state = _member("a", 300) + "," + _member("b", 212)
    assert len(state) == 513 and bounded_tracestate(state) == _member("a", 300)
    assert bounded_tracestate(_member("a", 513)) == ""  # one member too long: nothing of it
    # Members of at most 128 characters go from the end, as many as needed.
    small = [_member(f"k{i}", 100) for i in range(6)]  # 605 characters
    assert bounded_tracestate(",".join(small)) == ",".join(small[:5])
    # White space around members and empty members are not kept once cut.
    assert bounded_tracestate(" \t" + ", ,".join(small)) == ",".join(small[:5])


def test_tracestate_members_over_128_characters_go_first() -> None:
    long = _member("long", 129)
    state = ",".join([_member("a", 100), long, _member("b", 100), _member("c", 100), _member("d", 100)])
    assert len(state) == 533
    # The long member goes although it is not last; 403 characters remain.
    assert bounded_tracestate(state) == ",".join([_member("a", 100)] + [_member(k, 100) for k in "bcd"])
    exactly = _member("edge", 128)  # 128 characters is not over 128: cut from the end instead
    state = ",".join([_member("a", 100), exactly, _member("b", 100), _member("c", 100), _member("d", 100)])
    assert len(state) == 532
    assert bounded_tracestate(state) == ",".join([_member("a", 100), exactly, _member("b", 100), _member("c", 100)])
    # Long ones go from the end, and only as many as needed.
    longs = [_member(f"l{i}", 200) for i in range(3)]
    assert bounded_tracestate(",".join(longs)) == ",".join(longs[:2])


def test_tracestate_keeps_at_most_32_members() -> None:
    members = [f"k{i}=1" for i in range(40)]
    assert bounded_tracestate(",".join(members[:33])) == ",".join(members[:32])
    assert bounded_tracestate(",".join(members)) == ",".join(members[:32])
    # 33 members of which one is empty: 32 remain, nothing is lost.
    assert bounded_tracestate(",".join(members[:32]) + ",") == ",".join(members[:32])


@given(st.lists(st.tuples(st.sampled_from(["", " ", "\t"]), st.integers(0, 300)), max_size=45))
@settings(max_examples=300, deadline=None)
def test_a_bounded_tracestate_is_whole_members_of_the_original_in_order(parts):
    """Whatever the input: within 512 characters and 32 members, and made
    of whole members of the input, in their order."""
    members = [f"k{i}=" + "v" * size for i, (_, size) in enumerate(parts)]
    value = ",".join(pad + m + pad for (pad, _), m in zip(parts, members))
    out = bounded_tracestate(value)
    assert len(out) <= TRACE_CONTEXT_MAX["TRACESTATE"]
    kept = out.split(",") if out else []
    assert len(kept) <= 32
    if out != value:
        stripped = iter(members)
        assert all(m in stripped for m in kept)  # a subsequence: whole, in order
