"""homenode firmware: the node daemon, its sans-IO protocol core, store, links and CLI."""

__version__ = "0.1.0"
