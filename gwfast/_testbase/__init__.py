"""Realistic test infrastructure shipped with the package: real processes on free ports.

Kept in the package (as asyncpg and uvloop do) so that tests, benchmarks and users'
own integration tests start the same real gateway and backends.
"""
