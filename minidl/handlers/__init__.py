"""Training and evaluation loops; training curves (History)."""

from minidl.handlers.handlers import Calculator, Handler, Trainer, Validator  # noqa: F401
from minidl.handlers.history import COLUMNS, History  # noqa: F401
