"""Tenants, teams, cost centers, principals, API keys and roles."""
