"""Signing keys and their lifecycle: pending -> active -> retired -> removed (or revoked).

This package imports nothing else of Warrant's.
"""
