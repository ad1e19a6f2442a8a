"""Who may do what (accounts, roles, sessions, API tokens, one permission table) and who did
what (the audit trail)."""
