"""Warrant's gRPC API definition (`warrant.v1`) and its generated code."""
