"""Reading the project's Markdown as the docs tests need it: the rows of a page's table under a
heading, and the shell commands of its code blocks with the output shown under them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.project import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\s*$")


def section(text: str, heading: str) -> str:
    """The text under the Markdown heading ``heading`` (any level), up to the next heading of
    the same or a higher level. Raises KeyError when the page has no such heading."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#+) (.*)$", line)
        if match and match.group(2).strip() == heading:
            level = len(match.group(1))
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if (m := re.match(r"^(#+) ", lines[j])) and len(m.group(1)) <= level
                ),
                len(lines),
            )
            return "\n".join(lines[i + 1 : end])
    raise KeyError(f"no heading {heading!r}")


def table_first_cells(text: str) -> list[str]:
    """The first cell of every body row of the Markdown tables in ``text``."""
    cells = []
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"^\|\s*-", line):
            continue
        cells.append(line.split("|")[1].strip())
    return cells[1:] if cells else []  # the header row


@dataclass
class Command:
    """One shell command of a code block, the output shown under it (``console`` blocks), and
    the block it belongs to (commands of one block share a shell)."""

    source: str
    block: int
    command: str
    shown: list[str]


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced code block of the Markdown ``text``."""
    blocks, current, language = [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if current is None and fence:
            current, language = [], fence.group(1)
        elif current is not None and line.startswith("```"):
            blocks.append((language, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def joined(lines: list[str]) -> list[str]:
    """Lines with their ``\\`` continuations joined."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def shell_commands(path: Path, heading: str | None = None) -> list[Command]:
    """The commands of ``path``'s ``console`` blocks (``$ `` lines, the lines up to the next
    one being their shown output) and ``bash`` blocks (every line that is not a comment; no
    output shown), in order; only those under ``heading`` when given."""
    commands: list[Command] = []
    text = path.read_text()
    source = str(path.relative_to(PROJECT_ROOT))
    if heading is not None:
        text, source = section(text, heading), f"{source}#{heading}"
    for number, (language, lines) in enumerate(code_blocks(text)):
        if language == "console":
            for line in joined(lines):
                if line.startswith("$ "):
                    commands.append(Command(source, number, line[2:].strip(), []))
                elif commands and commands[-1].block == number:
                    commands[-1].shown.append(line)
        elif language == "bash":
            for line in joined(lines):
                text = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
                if text:
                    commands.append(Command(source, number, text, []))
    return commands


def shown_pattern(shown: list[str]) -> re.Pattern[str]:
    """The output a command shows, as a pattern: ``…`` stands for any text, a line of ``…``
    alone for any lines (none included), runs of spaces for any run of spaces (aligned
    columns), everything else literally."""
    pattern, open_line = "", False
    for line in shown:
        if line.strip() == "…":
            pattern += "(?:\n.*)?" if open_line else "(?:.*\n)?"
            continue
        pieces = [re.escape(" ".join(piece.split())) for piece in line.split("…")]
        pattern += ("\n" if open_line else "") + ".*?".join(pieces)
        open_line = True
    return re.compile(pattern, re.S)


def normalised(output: str) -> str:
    """``output`` with each line's runs of spaces made one, and no trailing blank lines."""
    return "\n".join(" ".join(line.split()) for line in output.rstrip("\n").splitlines())
