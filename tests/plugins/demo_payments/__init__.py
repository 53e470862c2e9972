"""Tests of the demo payments plugin."""
