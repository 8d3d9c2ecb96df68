"""Every command README.md and docs/ show works as printed after `make install`, in a fresh shell with
nothing activated: its make target exists, its `.venv/bin/` program exists, its flags are ones
`--help` lists, and nothing needs an activated venv (a bare `uv`, `python`, `pytest`...)."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(sh|bash|shell|console)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
# Programs only an activated venv (or uv's own install) puts on the PATH, besides whatever is in .venv/bin.
NEEDS_VENV = {"uv", "uvx", "python", "python3", "pip", "pip3"}
# Modules whose flags are checked against their own --help.
CHECKED_MODULES = ("service", "loadtest")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str


def commands_in(text: str, where: str) -> list[Command]:
    """The shell commands of `text`'s sh/bash/console blocks: in a console block the lines after `$ `,
    elsewhere every line but comments; continuation lines joined, heredoc bodies skipped."""
    found = []
    for block in BLOCK.finditer(text):
        console = block.group(1) == "console"
        first_line = text.count("\n", 0, block.start(2)) + 1
        lines = block.group(2).split("\n")
        i = 0
        while i < len(lines):
            line, number = lines[i], first_line + i
            i += 1
            if console:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + " " + lines[i].strip()
                i += 1
            heredoc = HEREDOC.search(line)
            if heredoc:  # its body is input, not commands
                while i < len(lines) and lines[i].strip() != heredoc.group(1):
                    i += 1
                i += 1
                line = line[: heredoc.start()]
            found.append(Command(f"{where}:{number}", line))
    return found


def simple_commands(command: str) -> list[list[str]]:
    """`command` split at pipes, `&&`, `;` and `&`, each without redirections and leading VAR=value."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    pieces: list[list[str]] = [[]]
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
        elif word in SEPARATORS:
            pieces.append([])
        elif word in {">", ">>", "<", "2>", "&>"} or word.startswith(("<", ">")):
            skip_next = True  # the redirection's target
        else:
            pieces[-1].append(word)
    simple = []
    for piece in pieces:
        while piece and ASSIGNMENT.match(piece[0]):
            piece = piece[1:]
        if piece:
            simple.append(piece)
    return simple


@functools.cache
def make_targets() -> frozenset[str]:
    makefile = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))


@functools.cache
def help_text(module: str, subcommand: str | None = None) -> str:
    argv = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        module,
        *([subcommand] if subcommand else []),
        "--help",
    ]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed: {result.stderr[-500:]}"
    return result.stdout


def problems(words: list[str]) -> list[str]:
    """What would stop `words` (one simple command) from working as printed after `make install`."""
    program, args = words[0], words[1:]
    if program in NEEDS_VENV or (
        "/" not in program and (ROOT / ".venv" / "bin" / program).exists() and program != "make"
    ):
        return [f"`{program}` is not on a fresh shell's PATH: use a make target or a program in .venv/bin/"]
    if program == "make":
        return [
            f"no make target `{arg}`"
            for arg in args
            if not arg.startswith("-") and not ASSIGNMENT.match(arg) and arg not in make_targets()
        ]
    if "/" in program and not program.startswith(("/", "~", "$")):
        path = ROOT / program
        if not path.exists():
            return [f"`{program}` does not exist after make install"]
        if path.name == "python" and args[:1] == ["-m"] and len(args) > 1 and args[1] in CHECKED_MODULES:
            module, rest = args[1], args[2:]
            subcommand = rest[0] if rest and rest[0] == "compare" else None
            shown = help_text(module, subcommand)
            flags = [arg.split("=", 1)[0] for arg in rest if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", arg)]
            shown_as = " ".join(args[1 : 3 if subcommand else 2])
            return [
                f"`{flag}` is not a flag `python -m {shown_as} --help` lists"
                for flag in flags
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown)
            ]
    return []


def check(paths: list[Path]) -> list[str]:
    failures = []
    for path in paths:
        for command in commands_in(path.read_text(), str(path.relative_to(ROOT))):
            for words in simple_commands(command.text):
                failures += [f"{command.where}: {command.text}\n    {p}" for p in problems(words)]
    return failures


def test_every_command_in_the_readme_and_docs_works_as_printed() -> None:
    failures = check(DOCS)
    assert not failures, "commands that would not work as printed:\n" + "\n".join(failures)


def test_the_extraction_finds_the_readmes_commands() -> None:
    """The check above is not vacuous: it sees the README's set-up and demo commands, whole."""
    texts = [c.text for c in commands_in((ROOT / "README.md").read_text(), "README.md")]
    assert "make install   # .venv from uv.lock, every extra and the dev tools" in texts
    assert "make requests" in texts
    assert any(t.startswith("MODEL=examples.price_forecaster:PriceForecaster make run") for t in texts)
    docs = check_commands_of(ROOT / "docs" / "load-tester.md")
    assert any("--zipf 1.1 --seed 1" in t for t in docs), "continuation lines are joined"


def check_commands_of(path: Path) -> list[str]:
    return [c.text for c in commands_in(path.read_text(), path.name)]


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("```sh\nuv run --frozen python -m service --help\n```", "`uv` is not on a fresh shell's PATH"),
        ("```console\n$ python -m loadtest --help\n```", "`python` is not on a fresh shell's PATH"),
        ("```bash\npytest -q tests\n```", "`pytest` is not on a fresh shell's PATH"),
        ("```sh\nmake api-with-cash\n```", "no make target `api-with-cash`"),
        ("```sh\nmake run PORT=8001 && make nope\n```", "no make target `nope`"),
        ("```sh\n.venv/bin/nothing-here --x\n```", "`.venv/bin/nothing-here` does not exist"),
        ("```sh\nMODEL=x .venv/bin/python -m service --ttl 5 --no-such-flag 1\n```", "`--no-such-flag`"),
        ("```console\n$ .venv/bin/python -m loadtest --url u \\\n    --zipff 1.1\nout\n```", "`--zipff`"),
        ("```sh\n.venv/bin/python -m loadtest compare --verbose a b\n```", "`--verbose` is not a flag"),
        ("```sh\ncat > x <<'EOF'\nuv run nothing\nEOF\nuv sync\n```", "`uv` is not on"),
    ],
)
def test_a_command_that_would_fail_is_reported(tmp_path: Path, block: str, problem: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n{block}\n")
    failures = check_paths_under(tmp_path, page)
    assert len(failures) == 1, failures
    assert problem in failures[0]


@pytest.mark.parametrize(
    "block",
    [
        "```sh\nmake install   # comment\nMODEL=a:b make run PORT=8001\n```",
        "```console\n$ .venv/bin/python -m loadtest --url u -n 10 -c 2 -z 30s --rate 5\nuv: output\n```",
        "```sh\ncurl -s localhost:8000/metrics | grep '^predcache' > out.txt\n```",
        "```sh\n.venv/bin/python -m service --no-cache --redis-url=redis://x\n```",
        "```text\nuv is fine in a text block\n```",
    ],
)
def test_a_command_that_works_is_not_reported(tmp_path: Path, block: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n{block}\n")
    assert check_paths_under(tmp_path, page) == []


def check_paths_under(root: Path, page: Path) -> list[str]:
    failures = []
    for command in commands_in(page.read_text(), page.name):
        for words in simple_commands(command.text):
            failures += [f"{command.where}: {p}" for p in problems(words)]
    return failures
