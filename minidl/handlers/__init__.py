"""Training and evaluation loops."""

from minidl.handlers.handlers import Calculator, Handler, Trainer, Validator  # noqa: F401
