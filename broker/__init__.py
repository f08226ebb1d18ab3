"""The credential broker: tenant tokens and instance roles in, short-lived AWS credentials out,
delivered to sandboxes the way AWS SDKs already understand."""
