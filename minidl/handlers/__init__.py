"""Training and evaluation loops."""

from minidl.handlers.handlers import Calculator, Trainer, Validator  # noqa: F401
