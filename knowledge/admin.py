from django.contrib import admin

from .models import Article


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin[Article]):
    list_display = ["title", "slug", "language", "published", "updated_at"]
    list_filter = ["published", "language"]
    search_fields = ["title", "body", "slug"]
    prepopulated_fields = {"slug": ["title"]}
