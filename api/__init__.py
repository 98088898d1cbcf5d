"""vitrine's HTTP API (`vitrine serve`): uploads in, results and similar items out.

FastAPI on uvicorn. Routes are thin: they check the caller (bearer token, `vitrine.api.auth`),
then call the same `ops` and `vitrine.db.repository` functions the CLI uses, inside a database
transaction that runs as the caller's merchant where the caller is one.
"""
