"""The scale-out backend: the same store interfaces as the SQLite default, kept in Redis.

Every key starts with the configured prefix (`erv:` by default). Operations that must be atomic
(redeeming a link, a failed sign-in, appending to the case record's chain) run as Lua scripts
or optimistic transactions, so any number of nodes can use them at once.
"""
