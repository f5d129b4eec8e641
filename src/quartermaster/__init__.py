"""Quartermaster: metering, chargeback and governance for platforms of micro-apps."""

__version__ = "0.1.0"
