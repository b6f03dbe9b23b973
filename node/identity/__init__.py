"""Who a participant is: encrypted keystores and the sources of their passwords.

Modules:
- ``keystore``   eth-account V3 keystore files: create, import, list, unlock
- ``passwords``  password sources (prompt, environment variable, file); never argv
- ``errors``     the :class:`~node.errors.IdentityError` subtree
"""
