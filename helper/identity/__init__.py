"""SPIFFE identities and their validation: IDs, X.509-SVIDs, JWT-SVIDs, bundles. Pure."""
