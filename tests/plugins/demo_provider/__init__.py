"""Tests of the demo provider plugin."""
