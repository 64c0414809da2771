"""Training curves (History, the Trainer's rows, CSV and PNG) and the example's command-line errors."""

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from minidl.backend import gpuarray
from minidl.cost import MSE, CrossEntropy
from minidl.handlers import COLUMNS, History, Trainer, Validator
from minidl.modules import Linear
from minidl.optimizers import SGD, StepLR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_trainer_records_one_row_per_pass(backend):
    x, y = _problem()
    np.random.seed(1)
    net = Linear(4, 3)
    trainer = Trainer(net, CrossEntropy(), SGD(learnRate=0.0).setupOn(net), batchsize=8)
    xd, yd = gpuarray.to_gpu(x), gpuarray.to_gpu(y)
    # learning rate 0: the weights never change, so the accuracy measured batch by batch during the
    # pass is the accuracy of the whole set, computed here independently
    scores = x.astype(np.float64) @ net.W.get().astype(np.float64) + net.b.get()
    expected = np.mean(scores.argmax(1) == y)
    loss = trainer.train(xd, yd)
    row = trainer.history.rows[0]
    assert row["epoch"] == 1 and row["trainLoss"] == loss
    assert row["trainAccuracy"] == pytest.approx(expected, abs=1e-7) and trainer.trainAccuracy == row["trainAccuracy"]
    assert row["learnRate"] == 0.0 and row["seconds"] > 0 and row["valError"] is None
    trainer.trainFromHost(x, y, macroBatchSize=16)
    assert [r["epoch"] for r in trainer.history.rows] == [1, 2]
    assert trainer.history.rows[1]["trainAccuracy"] == pytest.approx(expected, abs=1e-7)
    error = Validator(net, CrossEntropy()).validate(xd, yd)
    trainer.history.addValidation(error, accuracy=1 - error)
    assert trainer.history.rows[1]["valError"] == error and trainer.history.rows[1]["valAccuracy"] == 1 - error
    assert trainer.history.column("valError") == [None, error]


def test_no_accuracy_for_other_costs_and_the_rate_of_the_last_update(backend):
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((12, 4)).astype(np.float32), rng.standard_normal((12, 3)).astype(np.float32)
    net = Linear(4, 3)
    opt = SGD(learnRate=1.0).setupOn(net)
    trainer = Trainer(net, MSE(), opt, batchsize=4, schedule=StepLR(0.1, stepSize=2, gamma=0.5))
    trainer.train(gpuarray.to_gpu(x), gpuarray.to_gpu(t))
    row = trainer.history.rows[0]
    assert row["trainAccuracy"] is None
    assert row["learnRate"] == pytest.approx(0.05), "three updates at 0.1, 0.1, 0.05"
    assert opt.learnRate == pytest.approx(0.05), "after the third step(): lr(3) = 0.05"


def test_csv_content(tmp_path):
    history = History()
    history.addEpoch(2.5, 0.25, 0.1, 1.5)
    history.addValidation(0.5, accuracy=0.5)
    history.addEpoch(1.0 / 3, None, 0.05)
    path = tmp_path / "curves.csv"
    assert history.writeCsv(str(path)) == str(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(COLUMNS)
    assert rows[1] == ["1", "2.5", "0.25", "0.5", "0.5", "0.1", "1.5"]
    assert rows[2] == ["2", repr(1.0 / 3), "", "", "", "0.05", ""]
    assert float(rows[2][1]) == 1.0 / 3, "floats round-trip exactly"
    history.addEpoch(0.5)
    history.writeCsv(str(path))              # replaces the file
    with open(path, newline="") as f:
        assert len(list(csv.reader(f))) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["curves.csv"], "no temporary file left behind"


def test_history_errors(tmp_path):
    history = History()
    with pytest.raises(ValueError, match=r"History.addValidation: no epoch recorded yet"):
        history.addValidation(0.1)
    with pytest.raises(TypeError, match=r"History.addEpoch: trainLoss must be a number or None, got 'x'"):
        history.addEpoch("x")
    with pytest.raises(KeyError, match=r"History.column: expected one of epoch, trainLoss"):
        history.column("loss")
    with pytest.raises(FileNotFoundError):
        history.writeCsv(str(tmp_path / "missing" / "c.csv"))


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = History()
    for k in range(4):
        history.addEpoch(1.0 / (k + 1), 0.5 + 0.1 * k, 0.1 / (k + 1), 1.0)
        history.addValidation(0.4 - 0.05 * k, 0.6 + 0.05 * k)
    path = tmp_path / "curves.png"
    history.plot(str(path), title="test")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"History.plot: no epoch recorded yet"):
        History().plot(str(tmp_path / "empty.png"))


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib raises ImportError
    history = History()
    history.addEpoch(1.0)
    with pytest.raises(ImportError, match=r"History.plot needs matplotlib, which is not installed: "
                                          r"pip install 'minidl\[plot\]'"):
        history.plot(str(tmp_path / "c.png"))
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], r"argument --epochs: must be an integer >= 1, got '0'"),
    (["--epochs", "two"], r"argument --epochs: expected an integer, got 'two'"),
    (["--batchsize", "0"], r"argument --batchsize: must be an integer >= 1, got '0'"),
    (["--batchsize", "-4"], r"argument --batchsize: must be an integer >= 1, got '-4'"),
    (["--width", "0"], r"argument --width: must be a finite number > 0, got '0'"),
    (["--width", "-0.5"], r"argument --width: must be a finite number > 0, got '-0.5'"),
    (["--lr", "0"], r"argument --lr: must be a finite number > 0, got '0'"),
    (["--lr", "nan"], r"argument --lr: must be a finite number > 0, got 'nan'"),
    (["--limit", "-1"], r"argument --limit: must be an integer >= 1, got '-1'"),
    (["--limit", "0"], r"argument --limit: must be an integer >= 1, got '0'"),
    (["--clip", "-1"], r"argument --clip: must be a finite number >= 0, got '-1'"),
    (["--warmup", "1.5"], r"--warmup must be a fraction of the run, below 1, got 1.5"),
    (["--data-dir", "/nonexistent/cifar"], r"--data-dir '/nonexistent/cifar' is not a folder"),
    (["--out", "/nonexistent/folder/w.h5"], r"--out '/nonexistent/folder/w.h5': its folder '/nonexistent/folder' "
                                            r"does not exist"),
    (["--model", "v3"], r"argument --model: invalid choice: 'v3'"),
    (["--bogus"], r"unrecognized arguments: --bogus"),
], ids=["epochs0", "epochsText", "batch0", "batchNegative", "width0", "widthNegative", "lr0", "lrNan", "limitNegative",
        "limit0", "clipNegative", "warmupAbove1", "dataDirMissing", "outFolderMissing", "modelChoice", "unknownFlag"])
def test_example_rejects_bad_arguments_in_one_line(args, message):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_mobilenet.py")] + args,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("train_mobilenet.py: error: ") and lines[0].endswith("(see --help)")
    assert re.search(message, lines[0]), lines[0]
    assert proc.stdout == ""


def test_example_reports_a_folder_without_cifar_batches_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_mobilenet.py"),
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CIFAR-10 batch" in lines[0] and "not found" in lines[0], proc.stderr
