"""The configuration file and the OTEL_EXEC_* variables: names derived from
the flags (docs/configuration.md checked against the code), precedence flag >
variable > file > default, and the file read as a root agent's input must be:
refused when another user could have written or redirected it."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from otel_exec import cli, config
from otel_exec.config import parse_layered, settings, settings_table, subcommand
from otel_exec.errors import UsageError
from otel_exec.host.safefs import UnsafePath

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def run_parser():
    return subcommand(cli.build_parser(), "run")


def parse(argv: list[str], env: dict[str, str] | None = None):
    return parse_layered(cli.build_parser(), ["run", "--config", "", *argv] if "--config" not in argv
                         else ["run", *argv], env or {})


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_docs_table_is_the_code():
    text = DOC.read_text()
    table = re.search(r"<!-- settings-table: begin -->\n(.*)<!-- settings-table: end -->", text, re.S).group(1)
    assert table == settings_table(run_parser()), "regenerate docs/configuration.md (command in the file)"


def test_every_option_has_help_and_names_follow_the_flag():
    for action in settings(run_parser()):
        assert action.help, action.option_strings
        flag = action.option_strings[-1].removeprefix("--")
        assert config.env_name(action) == "OTEL_EXEC_" + flag.upper().replace("-", "_")
        assert config.file_key(action) == flag.replace("-", "_")
    assert cli.build_parser().format_help()


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path):
    f = write(tmp_path / "c.yaml", "stats_interval: 30\nsample_rate: 4\nspool_dir: /srv/file\n"
                                   "comm: [a, b]\nno_spool: true\n")
    env = {"OTEL_EXEC_SAMPLE_RATE": "8", "OTEL_EXEC_COMM": "c,d"}
    args = parse(["--config", str(f), "--comm", "e", "--spool-dir", "/srv/flag"], env)
    assert args.stats_interval == 30.0  # file
    assert args.sample_rate == 8  # variable over file
    assert args.spool_dir == "/srv/flag"  # flag over file
    assert args.comm == ["e"]  # a flag replaces, it does not add
    assert args.no_spool is True
    assert args.poll_interval == config.Config.poll_interval  # default
    cfg = cli.config_from_args(parse(["--config", str(f), "--sample-rate", "2", "--keep-uid", "0"], env))
    assert (cfg.sample_rate, cfg.comm, cfg.spool_dir, cfg.keep_uid) == (2, ["c", "d"], None, [0])


def test_env_values_switches_lists_and_commas():
    args = parse([], {"OTEL_EXEC_NO_SPOOL": "yes", "OTEL_EXEC_REDACT_PATTERN": '["id=(\\\\d{3,})", "x"]',
                      "OTEL_EXEC_NO_FIELD": "argv,env", "OTEL_EXEC_UID": "0,1000",
                      "OTEL_EXEC_EXPORTER": "otlp,console"})
    assert args.no_spool is True
    assert args.redact_pattern == ["id=(\\d{3,})", "x"]
    assert cli.config_from_args(args).no_field == ["argv", "env"]
    assert args.uid == [0, 1000] and args.exporter == ["otlp", "console"]
    with pytest.raises(UsageError, match="OTEL_EXEC_NO_SPOOL: 'maybe' is neither true nor false"):
        parse([], {"OTEL_EXEC_NO_SPOOL": "maybe"})
    with pytest.raises(UsageError, match="OTEL_EXEC_UID: 'root' is not a valid int"):
        parse([], {"OTEL_EXEC_UID": "root"})
    with pytest.raises(UsageError, match="OTEL_EXEC_BACKEND: 'ebpf' is not one of auto, core, bcc"):
        parse([], {"OTEL_EXEC_BACKEND": "ebpf"})


@pytest.mark.parametrize("text, message", [
    ("spooldir: /x\n", r"unknown setting 'spooldir' \(did you mean 'spool_dir'\?\)"),
    ("sample_rate: many\n", r"sample_rate: 'many' is not a valid int"),
    ("no_spool: 1\n", r"no_spool: expected true or false, got 1"),
    ("comm: {a: 1}\n", r"comm: expected a string or number, got dict"),
    ("endpoint: [a, b]\n", r"endpoint: expected a string or number, got list"),
    ("- a\n- b\n", r"must be a mapping"),
    ("a: [\n", r"not valid YAML"),
    ("format: xml\n", r"'xml' is not one of pretty, jsonl"),
])
def test_bad_file_is_a_usage_error(tmp_path: Path, text: str, message: str):
    f = write(tmp_path / "c.yaml", text)
    with pytest.raises(UsageError, match=message):
        parse(["--config", str(f)])


def test_bad_file_exits_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    f = write(tmp_path / "c.yaml", "spool_dri: /x\n")
    assert cli.main(["run", "--config", str(f)]) == UsageError.exit_code == 2
    assert "unknown setting 'spool_dri'" in capsys.readouterr().err


def test_named_file_must_exist_default_file_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(UsageError, match="no such file"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(UsageError, match="no such file"):
        parse_layered(cli.build_parser(), ["run"], {"OTEL_EXEC_CONFIG": str(tmp_path / "missing.yaml")})
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", str(tmp_path / "config.yaml"))
    assert parse_layered(cli.build_parser(), ["run"], {}).stats_interval is None
    write(tmp_path / "config.yaml", "stats_interval: 5\n")
    assert parse_layered(cli.build_parser(), ["run"], {}).stats_interval == 5.0
    assert parse_layered(cli.build_parser(), ["run", "--config", ""], {}).stats_interval is None


def test_configmap_layout_root_symlinks_are_followed(tmp_path: Path):
    """A Kubernetes ConfigMap volume: config.yaml -> ..data/config.yaml,
    ..data -> ..2024_01_01_00_00_00.000/, all root's."""
    stamp = tmp_path / "..2024_01_01"
    stamp.mkdir()
    write(stamp / "config.yaml", "stats_interval: 7\n", 0o644)
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    assert parse(["--config", str(tmp_path / "config.yaml")]).stats_interval == 7.0


# --------------------------------------------------------------------------- as an attacker would


@root_only
def test_file_owned_by_another_user_is_refused(tmp_path: Path):
    f = write(tmp_path / "c.yaml", "endpoint: http://evil:4317\n", 0o644)
    os.chown(f, NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match="owned by uid 65534"):
        parse(["--config", str(f)])


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_file_others_can_write_is_refused(tmp_path: Path, mode: int):
    f = write(tmp_path / "c.yaml", "endpoint: http://evil:4317\n", mode)
    with pytest.raises(UnsafePath, match="writable by other users"):
        parse(["--config", str(f)])


@root_only
def test_symlink_planted_by_another_user_is_not_followed(tmp_path: Path):
    real = write(tmp_path / "real.yaml", "env_capture: all\n", 0o644)
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    with pytest.raises(UnsafePath, match="a symlink owned by uid 65534; not followed"):
        parse(["--config", str(link)])


@root_only
def test_directory_another_user_controls_is_refused(tmp_path: Path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    write(theirs / "c.yaml", "env_capture: all\n", 0o644)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match="owned by uid 65534"):
        parse(["--config", str(theirs / "c.yaml")])
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # not sticky: anyone can swap the file
    write(open_dir / "c.yaml", "env_capture: all\n", 0o644)
    with pytest.raises(UnsafePath, match="writable by other users"):
        parse(["--config", str(open_dir / "c.yaml")])


def test_hard_link_fifo_and_huge_file_are_refused(tmp_path: Path):
    real = write(tmp_path / "real.yaml", "stats_interval: 1\n")
    os.link(real, tmp_path / "hard.yaml")
    with pytest.raises(UnsafePath, match="has 2 links"):
        parse(["--config", str(tmp_path / "hard.yaml")])
    os.mkfifo(tmp_path / "fifo.yaml", 0o600)
    with pytest.raises(UnsafePath, match="not a regular file"):  # and does not block
        parse(["--config", str(tmp_path / "fifo.yaml")])
    huge = write(tmp_path / "huge.yaml", "#" * (config.CONFIG_FILE_MAX_BYTES + 1))
    with pytest.raises(UnsafePath, match="larger than"):
        parse(["--config", str(huge)])


def test_ring_buffer_default_is_the_backends_and_a_set_size_wins_for_both():
    """Without --ringbuf-bytes each backend gets its own ring (CO-RE the
    smallest allowed, or four times that when its pure-Python reader drains
    it, BCC twice the smallest: docs/operations.md#sizing); a size set by
    flag, variable or file is used by either backend and reader."""
    default = config.Config()
    assert default.ringbuf_bytes is None
    assert (default.ring_bytes("core"), default.ring_bytes("bcc")) == (2 << 20, 4 << 20)
    # CO-RE's records read by the pure-Python reference (no C extension): a larger ring.
    assert default.ring_bytes("core", native_reader=False) == 8 << 20
    assert default.ring_bytes("bcc", native_reader=False) == 4 << 20
    args = parse([], {"OTEL_EXEC_RINGBUF_BYTES": str(8 << 20)})
    assert args.ringbuf_bytes == 8 << 20
    chosen = config.Config(ringbuf_bytes=args.ringbuf_bytes)
    chosen.validate()
    assert (chosen.ring_bytes("core"), chosen.ring_bytes("core", native_reader=False),
            chosen.ring_bytes("bcc")) == (8 << 20, 8 << 20, 8 << 20)
    with pytest.raises(UsageError, match="at least"):
        config.Config(ringbuf_bytes=1 << 20).validate()
