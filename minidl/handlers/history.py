"""Training curves: one row per training pass (epoch), written as CSV or drawn as a PNG.

Every Trainer keeps a ``History`` in ``trainer.history`` and adds a row at the
end of each pass (each call of ``train``, ``trainFromHost`` or
``trainFromLoader``): the pass's mean training loss, its training accuracy
(CrossEntropy only: the fraction of training samples whose argmax was right,
measured in train mode on the augmented data, before each batch's update), the
learning rate of its last update and its wall time. Validation is added by the
caller, which knows when it validates: ``history.addValidation(error,
accuracy)`` fills the last row.

Columns (``COLUMNS``): epoch (1, 2, ...), trainLoss, trainAccuracy, valError,
valAccuracy, learnRate, seconds; a value not recorded is None (an empty CSV
cell).

    history = trainer.history
    error = validator.validate(testX, testY)
    history.addValidation(error, accuracy=1 - error)     # CrossEntropy: the error rate
    history.writeCsv("curves.csv")                       # always possible
    history.plot("curves.png")                           # needs matplotlib (pip install 'minidl[plot]')

Both writes replace the file atomically (minidl/filesave.py: a temporary file
renamed over the target; the folder must exist). ``plot`` draws with
matplotlib's object API and Agg canvas, so it changes no matplotlib setting of
the process (pyplot's backend included).
"""

import csv
import math

from minidl import filesave

COLUMNS = ("epoch", "trainLoss", "trainAccuracy", "valError", "valAccuracy", "learnRate", "seconds")


def _number(owner, name, value):
    """value as a float, or None; TypeError for anything but a real number or None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("%s: %s must be a number or None, got %r" % (owner, name, value)) from None


class History:
    """Per-epoch training curves: ``rows``, a list of {column: value} dicts in COLUMNS order.

    Example::

        >>> history = History()
        >>> row = history.addEpoch(trainLoss=0.9, trainAccuracy=0.7, learnRate=0.1, seconds=2.5)
        >>> row = history.addValidation(0.2, accuracy=0.8)
        >>> history.column("valAccuracy"), history.writeCsv("curves.csv")
        ([0.8], 'curves.csv')
        >>> open("curves.csv").read().splitlines()[1]
        '1,0.9,0.7,0.2,0.8,0.1,2.5'
    """

    def __init__(self):
        self.rows = []

    def __len__(self):
        return len(self.rows)

    def addEpoch(self, trainLoss, trainAccuracy=None, learnRate=None, seconds=None):
        """Append the next epoch's row: trainLoss (the pass's mean loss), trainAccuracy, learnRate and
        seconds (numbers, or None when not known); validation columns empty until addValidation.
        Returns the row."""
        row = dict.fromkeys(COLUMNS)
        row["epoch"] = len(self.rows) + 1
        for name, value in (("trainLoss", trainLoss), ("trainAccuracy", trainAccuracy),
                            ("learnRate", learnRate), ("seconds", seconds)):
            row[name] = _number("History.addEpoch", name, value)
        self.rows.append(row)
        return row

    def addValidation(self, error, accuracy=None):
        """Record the last epoch's validation error (a number) and accuracy (None when the cost has none).
        Returns the row."""
        if not self.rows:
            raise ValueError("History.addValidation: no epoch recorded yet (train one first)")
        row = self.rows[-1]
        row["valError"] = _number("History.addValidation", "error", error)
        row["valAccuracy"] = _number("History.addValidation", "accuracy", accuracy)
        return row

    def column(self, name):
        """The values of column name (one of COLUMNS), epoch by epoch (None where not recorded)."""
        if name not in COLUMNS:
            raise KeyError("History.column: expected one of %s, got %r" % (", ".join(COLUMNS), name))
        return [row[name] for row in self.rows]

    def writeCsv(self, path):
        """Write the rows as CSV (a header line of COLUMNS, then one line per epoch; empty cells for
        values not recorded; floats as repr writes them, which read back exactly) to path, atomically.
        Returns path."""

        def write(tmp):
            with open(tmp, "w", newline="") as f:
                out = csv.writer(f)
                out.writerow(COLUMNS)
                for row in self.rows:
                    out.writerow(["" if row[c] is None else repr(row[c]) for c in COLUMNS])
        filesave.replace(path, write)
        return path

    def plot(self, path, title=None):
        """Draw loss, accuracy (or validation error) and learning rate against the epoch into a PNG at
        path, atomically, with title (None: none) above. Needs matplotlib: ImportError saying how to
        install it otherwise; ValueError when no epoch is recorded. Returns path."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("History.plot needs matplotlib, which is not installed: pip install 'minidl[plot]' "
                              "(or matplotlib); History.writeCsv needs nothing") from None
        if not self.rows:
            raise ValueError("History.plot: no epoch recorded yet")
        epochs = self.column("epoch")
        figure = Figure(figsize=(12, 3.6), layout="constrained")
        FigureCanvasAgg(figure)
        loss, quality, rate = figure.subplots(1, 3)
        self._draw(loss, epochs, [("trainLoss", "train loss")], "loss")
        if any(v is not None for v in self.column("trainAccuracy") + self.column("valAccuracy")):
            self._draw(quality, epochs, [("trainAccuracy", "train"), ("valAccuracy", "validation")], "accuracy")
        else:
            self._draw(quality, epochs, [("valError", "validation")], "validation error")
        self._draw(rate, epochs, [("learnRate", "learning rate")], "learning rate (last update)")
        if title:
            figure.suptitle(title)
        filesave.replace(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
        return path

    def _draw(self, axes, epochs, series, ylabel):
        for name, label in series:
            points = [(e, v) for e, v in zip(epochs, self.column(name)) if v is not None and math.isfinite(v)]
            if points:
                axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        if len(series) > 1:
            axes.legend()
