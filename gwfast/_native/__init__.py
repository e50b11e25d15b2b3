"""Hot-path code with a compiled twin and a pure-Python twin of the same API.

Import from the selectors (`headscan`, `ring`): they pick the compiled twin unless
GWFAST_NO_EXTENSIONS is set, and export both twins for tests and benchmarks.
"""
