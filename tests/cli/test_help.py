"""A newcomer's first hour (issue 28, item 5): every command and option says what it does, in
the README's words; a mistake in the configuration or a group name is one line that says what
is wrong; `bridge dev` suggests a command that works as the README has it run."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.cli.dev import send
from bridge.dev.stack import _print_banner
from tests.conftest import SECRET
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]
README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| (`bridge .+?`) \| (.+) \|$", re.MULTILINE)


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def plain(text: str) -> str:
    """Text as a reader compares it: no code marks, no asides in parentheses, one case."""
    text = text.replace("`", "")
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\s*\([^()]*\)", "", text)
    return re.sub(r"\s+", " ", text).strip().rstrip(".").lower()


def readme_rows() -> list[tuple[list[str], str]]:
    """The Commands table: each row's command forms (``bridge held release|discard …``) and
    what it says the command does."""
    rows = []
    for forms, does in ROW.findall(README.read_text()):
        rows.append((re.findall(r"`(bridge [^`]+)`", forms.replace("\\|", "|")), does))
    return rows


def resolve(form: str) -> tuple[click.Command, list[click.Command]]:
    """The command a README form names, and every subcommand its ``a|b`` alternatives name."""
    command: click.Command = main
    for word in form.split()[1:]:
        if not re.fullmatch(r"[a-z|]+", word):
            break  # options, [optional] parts and ARGUMENTS follow the command's name
        assert isinstance(command, click.Group), form
        if "|" in word:
            return command, [command.commands[w] for w in word.split("|")]
        command = command.commands[word]
    return command, [command]


def option_names(command: click.Command) -> set[str]:
    return {name for p in command.params if isinstance(p, click.Option) for name in p.opts}


def test_every_command_and_option_says_what_it_does() -> None:
    for path, command in commands(main):
        assert command.get_short_help_str(limit=1000), f"bridge {' '.join(path)}: no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"bridge {' '.join(path)} {param.opts[0]}: no help"


def test_the_readme_table_says_what_each_commands_help_says() -> None:
    rows = readme_rows()
    assert len(rows) >= 12, rows
    for forms, does in rows:
        named, _ = resolve(forms[0])
        help_ = named.get_short_help_str(limit=1000)
        assert plain(does).startswith(plain(help_)), (forms[0], help_, does)
        for form in forms:
            _, subcommands = resolve(form)
            for option in re.findall(r"--[a-z-]+", form + " " + does):
                assert any(option in option_names(c) for c in subcommands), (form, option)


def test_status_help_is_the_readmes() -> None:
    result = CliRunner().invoke(main, ["status", "--help"])
    assert result.exit_code == 0, result.output
    assert "Queues, held syncs, quarantine and targets, in the terminal." in result.output


@pytest.mark.parametrize("base", ["http://127.0.0.1:8000", "http://127.0.0.1:8123"])
def test_the_dev_banner_suggests_a_send_that_reaches_this_stack(
        base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _print_banner(base, SECRET, "http://127.0.0.1:8001", "redis://127.0.0.1:6390/0",
                  tmp_path / "dev.toml")
    [suggested] = re.findall(r"try it +(.+)", capsys.readouterr().out)
    program, command, *args = suggested.split()
    assert f"{program} {command} --generate" in README.read_text()  # the README's own form
    context = send.make_context("send", list(args))  # it consumes the list
    assert context.params["url"] == f"{base}/webhooks/crm"
    assert ("--url" in args) == (base != "http://127.0.0.1:8000"), suggested  # none redundant


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("reconciling")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.processes
@pytest.mark.parametrize(("setting", "written", "expected"), [
    ('kind = "rentix"', 'kind = "rentx"',
     "targets[0].kind: 'rentx' is not a kind of target; use 'rentix' or 'travtus'"),
    ('api_key = "sandbox"', 'api_key = "${LB_TEST_UNSET_KEY}"',
     "targets[0].api_key: found '${LB_TEST_UNSET_KEY}', but the environment variable "
     "LB_TEST_UNSET_KEY is not set"),
], ids=["misspelt kind", "unset variable"])
def test_a_configuration_mistake_names_the_file_the_setting_and_the_way_out(
        tmp_path: Path, setting: str, written: str, expected: str) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(stack_config("redis://127.0.0.1:9/0", "http://127.0.0.1:9")
                      .replace(setting, written))
    assert one_line_error(run(config, "status")) == f"Error: {config}: {expected}"


@pytest.mark.processes
def test_reconcile_of_a_group_never_seen_says_it_is_unknown(redis_url: str,
                                                             tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(stack_config(redis_url, "http://127.0.0.1:9"))
    assert one_line_error(run(config, "reconcile", "--group", "nosuch")) == (
        "Error: unknown group 'nosuch': the bridge has received no event for it "
        "(`bridge status` counts the groups known)")
