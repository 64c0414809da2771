"""A PuzzleLib training script runs with only its imports changed (examples/puzzlelib/)."""

import contextlib
import difflib
import importlib.util
import io
import os
import re

FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "puzzlelib")
PORT, ORIGINAL = os.path.join(FOLDER, "lenet_digits.py"), os.path.join(FOLDER, "lenet_digits_puzzlelib.py")


def _code(path):
    """The file's lines after its docstring."""
    text = open(path).read()
    return text[text.index('"""', 3) + 3:].splitlines()


def test_the_port_differs_from_the_puzzlelib_script_in_imports_only():
    changed = [line for line in difflib.unified_diff(_code(ORIGINAL), _code(PORT), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed, "the two files hold the same code"
    for line in changed:
        assert re.match(r"[+-]from (PuzzleLib|minidl)(\.\w+)* import ", line), "not an import: %r" % line
    assert sum(line.startswith("-") for line in changed) == sum(line.startswith("+") for line in changed)


def test_the_port_trains_and_restores_from_its_blueprint(backend):
    spec = importlib.util.spec_from_file_location("lenet_digits", PORT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        script.main()
    text = out.getvalue()
    assert "Processed batch 15 out of 24" in text, "onBatchFinish sees currBatch/totalBatches per macro-batch"
    accuracy = [float(a) for a in re.findall(r"Accuracy: ([0-9.]+)", text)]
    assert len(accuracy) == 8 and accuracy[-1] > 0.95, text
    assert "Lowered learn rate: 0.025" in text and "Lowered learn rate: 0.0125" in text
    assert "Restored from blueprint: lenet, same outputs: True" in text
