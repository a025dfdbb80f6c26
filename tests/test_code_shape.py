"""The shape of the source a reader holds in their head: what passes between functions is a named object, not a
long argument list (issue 26, item 2)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "autolfads"
MAX_PARAMETERS = 8


def parameter_counts(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(positional, required) parameters, not counting self, cls or an autograd Function's ctx; keyword-only
    parameters with defaults count as neither."""
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args if a.arg not in ("self", "cls", "ctx")]
    required_keywords = sum(default is None for default in args.kw_defaults)
    return len(positional), len(positional) - len(args.defaults) + required_keywords


def test_the_counter_counts_by_hand():
    source = "def f(self, a, b=1, *c, d, e=2, **f): pass\ndef g(ctx, *args): pass"
    f, g = ast.parse(source).body
    assert parameter_counts(f) == (2, 2) and parameter_counts(g) == (0, 0)


def test_no_function_takes_more_than_eight_positional_or_required_parameters():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                positional, required = parameter_counts(node)
                if max(positional, required) > MAX_PARAMETERS:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({positional}, {required})")
    assert not long, f"more than {MAX_PARAMETERS} positional or required parameters: {long}"
