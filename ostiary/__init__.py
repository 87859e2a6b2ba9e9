"""The ``ostiary`` command line: one entry point for the AS, the lock, the client, provisioning and the demo.

See :func:`ostiary.cli.main`; ``python -m ostiary`` runs the same.
"""
