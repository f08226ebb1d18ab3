"""Transports: each translates a caller's request to a BrokerService call and back."""
