"""The HTTP API: one router per feature, authentication, and the error model."""
