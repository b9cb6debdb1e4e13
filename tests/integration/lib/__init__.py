"""Helpers behind tests/integration/conftest.py: the throwaway PostgreSQL cluster
(pgcluster), test certificates (pki), seeding of Fernet-encrypted accounts (seed),
the daemon and ctl runners (daemon) and the NOTIFY listener (listen). The token
server lives in tests/tokenserver/ so that it also runs standalone."""
