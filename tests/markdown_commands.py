"""The commands a markdown page shows: its bash blocks' lines (continuations joined, comments dropped) and the
`autolfads ...` commands of its tables; and whether `autolfads` would accept one (as main() parses it)."""

from __future__ import annotations

import re
import shlex

from autolfads.cli.main import build_parser


def bash_lines(text: str, programs: tuple[str, ...] = ("autolfads",)) -> list[list[str]]:
    """The lines of the page's bash blocks that call one of `programs`, in order, as word lists."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in programs:
                lines.append(words)
    return lines


def bash_commands(text: str) -> list[list[str]]:
    """The `autolfads` commands of the page's bash blocks (without the program's name)."""
    return [words[1:] for words in bash_lines(text)]


def table_commands(text: str) -> list[list[str]]:
    """The `autolfads ...` commands of the page's tables."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [shlex.split(command)[1:] for row in rows for command in re.findall(r"`(autolfads [^`]+)`", row)]


def parse_error(argv: list[str]) -> str | None:
    """What `autolfads ARGV` would refuse before running (as main() parses it), or None."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit:
        return "argparse refused it"
    options = [item for item in unknown if item.startswith("--")]
    if args.command is None or options or (unknown and not args.takes_overrides):
        return f"unrecognized: {options or unknown}"
    return None
