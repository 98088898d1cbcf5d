"""The read path: which sources may be read (`policy`), and reading them (`fetch`, and
`fetch_many` for a batch). Every stored byte vitrine reads goes through here."""
