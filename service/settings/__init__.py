"""Settings: the option table, reading flags and the environment, and the converters that check them.

May import errors only.
"""
