"""The pytest plugin of CSP Portal (entry point ``pytest11: portal_testing``)."""
