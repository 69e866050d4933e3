"""Fake remote services (real HTTP servers on loopback) for tests."""
