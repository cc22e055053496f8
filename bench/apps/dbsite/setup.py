"""Creates the tables and fills them with the same rows every time: 2,000 authors and
20,000 books."""

import os
import random

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.dbsite.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402

from .models import Author, Book  # noqa: E402


def main():
    call_command("migrate", run_syncdb=True, verbosity=0)
    if Book.objects.exists():
        return
    rng = random.Random(0)
    authors = Author.objects.bulk_create(
        Author(name=f"Author {n}", country=rng.choice(["fr", "de", "jp", "br", "ke"]))
        for n in range(2000)
    )
    Book.objects.bulk_create(
        (
            Book(author=rng.choice(authors), title=f"Book {n}", pages=rng.randint(40, 900))
            for n in range(20000)
        ),
        batch_size=2000,
    )


if __name__ == "__main__":
    main()
