"""Supply-chain checks of OpsLake's locks and installed environment (docs/supply-chain.md).

Run as ``python -m infra.supply_chain COMMAND`` (the Makefile's ``lock``, ``lock-wheels``,
``audit``, ``sbom`` and ``licences`` targets); the unit tests import the same functions.
"""
