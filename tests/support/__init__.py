"""What the tests share: server launcher, free port, tokens, the settings environment, database and HTTP helpers.

Test modules import from here (and get fixtures from ``conftest.py``); a test module never imports another.
"""
