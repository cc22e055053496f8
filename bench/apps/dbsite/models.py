from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=80)
    country = models.CharField(max_length=2)


class Book(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    title = models.CharField(max_length=120)
    pages = models.IntegerField()
