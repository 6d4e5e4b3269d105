"""The webhook receiver of the tests: the one the demo and the bench use too
(`devkit/receiver.py`)."""

from devkit.receiver import Received, Receiver

__all__ = ["Received", "Receiver"]
