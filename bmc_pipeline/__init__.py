"""Backup and recovery for the bmc-cotizaciones MongoDB database and the BMC chatbot files."""

__version__ = "0.1.0"
