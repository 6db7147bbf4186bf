"""Everything that talks to the outside: embedders, vector stores, the Foundry emulator.

Importing this package changes nothing in the host process (no environment variables, no
global thread settings): limits go on the objects that need them.
"""
