"""warrant.v1: generated from credential_broker.proto; do not edit the *_pb2* files by hand."""
