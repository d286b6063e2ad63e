"""Shared plumbing of mes-rollout: configuration, database access, audit trail, CLI."""
