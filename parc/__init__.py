"""parc: a declarative pipeline compiler for distributed training."""

__version__ = "0.1.0"
