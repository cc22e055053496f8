"""Import specs (MODULE:ATTR) of the apps in tests/apps that more than one
module here serves."""

ECHO = "tests.apps.echo:app"
ERRORS = "tests.apps.errors:app"
LIFECYCLE = "tests.apps.lifecycle:app"
PROXIED = "tests.apps.proxied:app"
RECORDER = "tests.apps.recorder:app"
