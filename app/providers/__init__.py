"""Upstream providers: where proxy mode sends a request and the agent loop calls its model."""
