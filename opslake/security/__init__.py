"""Who may do what (roles, scopes, row scopes), identities and keys, audit, national crypto."""
