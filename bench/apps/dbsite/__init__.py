"""A small Django site whose pages each make one ORM query, for the `db` and `pg` sections.

The database comes from BENCH_DB: `sqlite:/path/to/file` or `pg:/socket/dir`
(a PostgreSQL cluster on a unix socket, database `bench`, user `postgres`).
`python -m bench.apps.dbsite.setup` creates the tables and the same rows every time.

/          the 20 newest books with their authors (one query, a join and a LIMIT)
/report    the 10 authors with the most pages (one query: a join and GROUP BY over all
           books; a few milliseconds inside PostgreSQL)
"""
