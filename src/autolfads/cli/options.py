"""What every command family shares: registering a sub-command with its handler, and options generated from
a function's keyword-only parameters (the synthetic data makers)."""

import argparse
import inspect
from collections.abc import Callable

# A handler runs one parsed command: (its arguments, the trailing KEY VALUE config overrides) -> exit status.
Handler = Callable[[argparse.Namespace, list[str]], int]
EXAMPLES = argparse.RawDescriptionHelpFormatter  # keeps the line breaks of a description and its examples


def add_command(commands: argparse._SubParsersAction, name: str, handler: Handler, **kwargs) -> argparse.ArgumentParser:
    """A sub-command whose parsed arguments go to `handler`; kwargs go to argparse's add_parser."""
    parser = commands.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler)
    # The top-level --debug, also accepted after the command (SUPPRESS: not given, it leaves the top level's value).
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def add_keyword_options(parser: argparse.ArgumentParser, function: Callable) -> None:
    """One `--name` option per keyword-only parameter, typed and defaulted like the parameter."""
    for name, param in inspect.signature(function).parameters.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                type=type(param.default),
                default=param.default,
                help=f"(default {param.default})",
            )


def keyword_values(args: argparse.Namespace, function: Callable) -> dict:
    """The parsed values of the options add_keyword_options made for `function`."""
    return {
        name: getattr(args, name)
        for name, param in inspect.signature(function).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }
