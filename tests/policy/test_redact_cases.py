"""Exact cases of the redaction policy (otel_exec.policy.redact) through
RedactionPolicy.argv/env/scan: the boundaries test_redact.py and the corpus
do not pin down, each found by a mutant of mutmut that survived them
(docs/testing.md, "Mutation score of the pure modules"). Each case is a
command line as it is typed, with its secret hidden and its look-alike
left alone.
"""
from __future__ import annotations

import pytest

from otel_exec.policy import redact
from otel_exec.policy.redact import DEFAULT_SECRET_KEY_WORDS, RedactionPolicy
from otel_exec.policy.redact import REDACTED as R



def fresh() -> RedactionPolicy:
    """A policy of its own per case: its memos (names, unchanged strings)
    start empty, so no earlier case (nor mutmut's stats run, which its
    workers fork from) has settled the case before the code under test
    runs."""
    return RedactionPolicy()


@pytest.mark.parametrize("argv,expected", [
    # a long option's value holding '=': the option is what comes before the first one
    (["curl", "--user=deploy:pa=ss", "https://h"], ["curl", f"--user=deploy:{R}", "https://h"]),
    (["smbclient", "--user=me%a=b", "//h/s"], ["smbclient", f"--user=me%{R}", "//h/s"]),
    # what follows the first separator is hidden, separators in it included
    (["curl", "-u", "deploy:pa:ss", "https://h"], ["curl", "-u", f"deploy:{R}", "https://h"]),
    (["curl", "-u", "deploy:", "https://h"], ["curl", "-u", "deploy:", "https://h"]),  # an empty password
    # docker's -p is a password only after login, behind a wrapper too
    (["sudo", "docker", "run", "-p", "8080:80", "img"], ["sudo", "docker", "run", "-p", "8080:80", "img"]),
    (["sudo", "docker", "login", "-p", "pw", "reg"], ["sudo", "docker", "login", "-p", R, "reg"]),
    # a program by its path, or opened by a shell's '(' or quote
    (["/usr/bin/mysql", "-pS3cret", "db"], ["/usr/bin/mysql", f"-p{R}", "db"]),
    (["sh", "-c", "(mysql -pS3cret db)"], ["sh", "-c", f"(mysql -p{R} db)"]),
    (["sh", "-c", "Xmysql -pS3cret"], ["sh", "-c", "Xmysql -pS3cret"]),  # another program
    # vault login TOKEN after options, and inside a shell command line
    (["vault", "login", "-no-print", "hvs.CAESIJx9yQ"], ["vault", "login", "-no-print", R]),
    (["sh", "-c", "vault login hvs.CAESIJx9yQ && export VAULT_ADDR=https://v:8200"],
     ["sh", "-c", f"vault login {R} && export VAULT_ADDR=https://v:8200"]),
    (["sh", "-c", "vault login hvs.CAESIJx9yQ && mysql -u app -pS3cret db"],
     ["sh", "-c", f"vault login {R} && mysql -u app -p{R} db"]),  # each program its own rules
    (["sh", "-c", "htpasswd -b /etc/htpw me pw\nmysql -u app db"],
     ["sh", "-c", f"htpasswd -b /etc/htpw me {R}\nmysql -u app db"]),
    # every Oracle tool: user/password[@connect]
    (["impdp", "system/Manager1@orcl", "dumpfile=x.dmp"], ["impdp", f"system/{R}@orcl", "dumpfile=x.dmp"]),
    (["sqlldr", "scott/tiger@orcl", "control=load.ctl"], ["sqlldr", f"scott/{R}@orcl", "control=load.ctl"]),
    (["dgmgrl", "sys/Oracle_1@prim"], ["dgmgrl", f"sys/{R}@prim"]),
    (["expdp", "hr/hr_pw", "directory=dp"], ["expdp", f"hr/{R}", "directory=dp"]),
    (["rman", "target", "/", "catalog", "rco/cat_pw@catdb"], ["rman", "target", "/", "catalog", f"rco/{R}@catdb"]),
    # an absolute path (a script, a control file) is no user/password
    (["sh", "-c", "sqlplus -s /nolog < /tmp/run.sql"], ["sh", "-c", "sqlplus -s /nolog < /tmp/run.sql"]),
    (["sqlldr", "/u01/app/load.ctl"], ["sqlldr", "/u01/app/load.ctl"]),
    # openssl passwd [options] PASSWORD: the last word, not the salt
    (["openssl", "passwd", "-6", "-salt", "Xy12", "hunter2"], ["openssl", "passwd", "-6", "-salt", "Xy12", R]),
    (["sudo", "openssl", "passwd", "-6", "hunter2"], ["sudo", "openssl", "passwd", "-6", R]),  # behind a wrapper
])
def test_positional_and_option_secrets(argv: list[str], expected: list[str]) -> None:
    assert fresh().argv(argv) == expected


def test_a_user_rule_s_empty_group_hides_nothing() -> None:
    p = RedactionPolicy(extra_patterns=[r"id=(\w*)"])
    assert p.scan("id= id=7") == f"id= id={R}"


def test_a_user_rule_s_group_after_one_that_took_no_part_is_hidden() -> None:
    p = RedactionPolicy(extra_patterns=[r"pin(-code)?=(\d+)"])
    assert p.scan("pin=1234 pin-code=5678") == f"pin={R} pin{R}={R}"


def test_pem_blocks_after_one_nested_in_another() -> None:
    text = ("-----BEGIN A-----\n-----BEGIN B-----\nb64\n-----END A-----\n"
            "-----BEGIN C-----\nsecret\n-----END C-----")
    assert fresh().scan(text) == f"-----BEGIN A-----{R}-----END A-----\n-----BEGIN C-----{R}-----END C-----"


def test_the_memo_of_name_decisions_is_bounded() -> None:
    """is_secret_name remembers names up to 256 characters, and empties
    its memo once it holds 4096 of them; the answers stay the same."""
    p = RedactionPolicy()
    memo = p._secret_names
    assert p.is_secret_name("A" * 252 + "_KEY") and p.is_secret_name("A" * 253 + "_KEY") is True
    assert ("A" * 252 + "_KEY") in memo and ("A" * 253 + "_KEY") not in memo
    names = [f"VAR_{i}" for i in range(4096 - len(memo))]
    assert not any(p.is_secret_name(n) for n in names)
    assert len(memo) == 4096
    assert p.is_secret_name("GITHUB_TOKEN") and list(memo) == ["GITHUB_TOKEN"]
    assert p.is_secret_name("GITHUB_TOKEN") and not p.is_secret_name("VAR_1")


@pytest.mark.parametrize("text,expected", [
    # a ':' and an '@' in the path, none in the authority: no credentials
    ("https://en.wikipedia.org/wiki/Special:Contributions/ops@example",
     "https://en.wikipedia.org/wiki/Special:Contributions/ops@example"),
    ("https://git.example.com:8443/a:b@c", "https://git.example.com:8443/a:b@c"),
    ("https://mail.example.org/thread/a@b.org/msg@c", "https://mail.example.org/thread/a@b.org/msg@c"),
])
def test_url_credentials_are_only_in_the_authority(text: str, expected: str) -> None:
    assert fresh().scan(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("use Basic dXNlcjpwYXNzd29yZA== here", f"use Basic {R} here"),
    ("-H Authorization: Bearer 9f8e7d6c5b4a", f"-H Authorization: Bearer {R}"),
])
def test_authorization_schemes_inside_a_value(text: str, expected: str) -> None:
    assert fresh().scan(text) == expected


def test_the_memos_of_unchanged_strings_count_their_characters_from_zero() -> None:
    p = RedactionPolicy()
    assert p.argv(["make", "-j8"]) == ["make", "-j8"]
    assert p._unchanged_args == {"make", "-j8"} and p._unchanged_args.chars == 7
    assert p.env(["HOME=/root", "GITHUB_TOKEN=ghp_x"]) == ["HOME=/root", f"GITHUB_TOKEN={R}"]
    assert p._unchanged == {"HOME=/root"} and p._unchanged.chars == 10  # never what was changed


def test_an_unknown_env_capture_mode_names_the_modes() -> None:
    with pytest.raises(ValueError, match=r"^env_capture must be one of none, redacted, all, not 'some'$"):
        RedactionPolicy(env_capture="some")  # type: ignore[arg-type]


@pytest.mark.parametrize("text,expected", [
    ("--apikey=abc", f"--apikey={R}"),  # the name without its dashes
    ("ApiKey =abc;Server=h", f"ApiKey ={R};Server=h"),  # ... and without the blanks before '='
    ("--apikeys=abc", "--apikeys=abc"),
])
def test_an_anchored_secret_key_pattern_sees_the_bare_name(text: str, expected: str) -> None:
    p = RedactionPolicy(secret_key_pattern=r"^apikey$")
    assert p.scan(text) == expected


def test_an_anchored_secret_key_pattern_sees_the_bare_flag_name() -> None:
    p = RedactionPolicy(secret_key_pattern=r"^apikey$")
    assert p.argv(["tool", "--apikey", "abc", "-apikey", "def", "--apikeys", "ghi"]) == \
        ["tool", "--apikey", R, "-apikey", R, "--apikeys", "ghi"]


@pytest.mark.parametrize("text,expected", [
    # a connection string: the password runs to the next ';' only
    ("Password=pw;Database=d;Server=h", f"Password={R};Database=d;Server=h"),
    # ODBC's braces quote a value that holds ';': to the end
    ("Pwd={p;w};Database=d", f"Pwd={R}"),
])
def test_connection_string_values(text: str, expected: str) -> None:
    assert fresh().scan(text) == expected


def test_an_assignment_after_a_hidden_value_is_hidden_too() -> None:
    assert fresh().scan(f"{R} password=hunter2") == f"{R} password={R}"


def test_the_unchanged_memo_empties_only_past_its_bound() -> None:
    memo = RedactionPolicy()._unchanged_args
    piece = redact._UNCHANGED_ENTRY_LEN_MAX
    for i in range(redact._UNCHANGED_CHARS_MAX // piece):
        memo.remember(f"{i:08d}".ljust(piece, "a"))
    assert memo.chars == redact._UNCHANGED_CHARS_MAX and len(memo) == redact._UNCHANGED_CHARS_MAX // piece
    memo.remember("b")
    assert memo == {"b"} and memo.chars == 1


def test_a_name_holding_every_key_word_is_secret() -> None:
    name = "_".join(DEFAULT_SECRET_KEY_WORDS)
    assert fresh().env([f"{name}=v"]) == [f"{name}={R}"]


@pytest.mark.parametrize("text,expected", [
    ("X-Api-Key: 5f1c9a", f"X-Api-Key: {R}"),
    ("X-Api-Key: ", "X-Api-Key: "),  # a header name with no value: nothing to hide
])
def test_header_values(text: str, expected: str) -> None:
    assert fresh().scan(text) == expected


def test_allowed_values_of_program_options_and_positionals_stay() -> None:
    """allow_patterns: a known false positive (a demo password) is kept,
    where it is attached, separate or positional."""
    p = RedactionPolicy(allow_patterns=[r"changeme", r"scott/tiger(@\w+)?"])
    assert p.argv(["mysql", "-pchangeme", "-p", "changeme"]) == ["mysql", "-pchangeme", "-p", "changeme"]
    assert p.argv(["sqlplus", "-s", "scott/tiger@orcl"]) == ["sqlplus", "-s", "scott/tiger@orcl"]
    assert p.argv(["sqlplus", "-s", "sys/pw@orcl"]) == ["sqlplus", "-s", f"sys/{R}@orcl"]
    assert p.argv(["mysql", "-ps3cret"]) == ["mysql", f"-p{R}"]


@pytest.mark.parametrize("command", [
    "htpasswd -b /etc/h alice S3cretPW && mysql -u root db",
    "htpasswd -b /etc/h alice S3cretPW; echo done",
    "htpasswd -b /etc/h alice S3cretPW || exit 1",
    "htpasswd -b /etc/h alice S3cretPW | tee log",
])
def test_a_shell_separator_ends_the_command_whose_positional_is_secret(command: str) -> None:
    """sh -c 'A && B': the password is A's last positional, before the
    separator, which stays as it was."""
    out = RedactionPolicy().argv(["sh", "-c", command])[2]
    assert "S3cretPW" not in out and "[REDACTED]" in out
    assert out.replace("[REDACTED]", "S3cretPW") == command


def test_a_password_a_user_rule_hid_in_part_is_hidden_whole() -> None:
    policy = RedactionPolicy(extra_patterns=[r"pw-\d+"])
    assert policy.scan("https://u:pw-123abc@h/x") == "https://u:[REDACTED]@h/x"
    assert policy.scan("https://u:pw-123@h/x") == "https://u:[REDACTED]@h/x"

