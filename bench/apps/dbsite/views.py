from django.db.models import Count, Sum
from django.shortcuts import render

from .models import Author, Book


def newest(request):
    books = Book.objects.select_related("author").order_by("-id")[:20]
    return render(request, "dbsite/books.html", {"books": books})


def report(request):
    authors = Author.objects.annotate(books=Count("book"), total=Sum("book__pages")).order_by(
        "-total", "id"
    )[:10]
    return render(request, "dbsite/report.html", {"authors": authors})
