"""Test support shipped to plugin authors: fixtures, fake servers and contract suites."""
