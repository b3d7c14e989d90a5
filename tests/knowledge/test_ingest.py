"""Operators add knowledge: `manage.py ingest_kb` (Markdown, text and HTML files) and the
article admin. Ingestion (formats, re-ingest, unreadable files, unpublish), bad input (empty
articles, huge files, HTML with scripts: stored and shown inert), and retrieval that follows
every change at once."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms import BooleanField

from knowledge.ingest import html_to_markdown
from knowledge.models import Article, Passage
from knowledge.search import search
from tests.conftest import ROOT, child_env

pytestmark = pytest.mark.django_db

ADMIN = "/admin/knowledge/article/"
# The article form's inlines (example questions, passages), posted empty.
NO_INLINE_ROWS = {
    f"{prefix}-{field}": "0"
    for prefix in ("example_questions", "passages")
    for field in ("TOTAL_FORMS", "INITIAL_FORMS")
}


def ingest(*paths: Path | str, **options: Any) -> tuple[str, str]:
    """Run ingest_kb; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("ingest_kb", *[str(p) for p in paths], stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def hit_texts(query: str, article: Article) -> list[str]:
    """The passages of `article` that search returns for `query`."""
    return [hit.text for hit in search(query, 10) if hit.article_id == article.pk]


@pytest.fixture
def lexical_only(settings: Any) -> None:
    """For tests where embeddings do not matter: no embedding work."""
    settings.KB_EMBEDDINGS = "off"


@pytest.fixture
def staff_client(client: Any) -> Any:
    staff = User.objects.create_user(
        "operator", password="pw-operator-123", is_staff=True, is_superuser=True
    )
    client.force_login(staff)
    return client


LAMP = """\
---
title: Pairing the Zephyr lamp
tags: [lamps, pairing]
---
Hold the button for five seconds. The zephyr lamp glows teal while it is pairing.

## When pairing fails

Move the lamp closer to the hub and try again.
"""

OTHER = """\
---
title: Paying by invoice
---
Business customers can pay by invoice within thirty days of delivery.
"""


# --- Formats --------------------------------------------------------------------------------


def test_it_ingests_markdown_with_front_matter_and_remembers_the_file(tmp_path, lexical_only):
    returns = tmp_path / "returns.md"
    returns.write_bytes(
        "\ufeff---\n"
        "title: How do I return an item?\n"
        "slug: returns-policy\n"
        "url: https://help.example/returns\n"
        "tags: [returns, orders]\n"
        "language: de\n"
        "---\n"
        "You can return any item within 30 days.\n\n## Refunds\n\nRefunds take 5 days.\n".encode()
    )
    write(tmp_path / "guides" / "Gift Cards.markdown", "# Gift cards\n\nBuy them online.\n")

    out, err = ingest(tmp_path)

    assert "2 files: 2 created, 0 updated, 0 unchanged, 0 skipped" in out
    article = Article.objects.get(slug="returns-policy")
    assert article.title == "How do I return an item?"
    assert article.url == "https://help.example/returns"
    assert article.tags == ["returns", "orders"]
    assert article.language == "de"
    assert article.published
    assert article.body.startswith("You can return any item within 30 days.\n\n## Refunds")
    assert article.source == str(returns.resolve())
    gift = Article.objects.get(slug="gift-cards")
    assert (gift.title, gift.body, gift.language) == ("Gift cards", "Buy them online.\n", "en")


def test_it_ingests_text_files_with_a_title_from_the_first_line_or_the_file_name(
    tmp_path, lexical_only
):
    write(
        tmp_path / "opening-hours.txt",
        "Opening hours\n=============\n\nWe are open 9-17 on weekdays.\n\nClosed on holidays.\n",
    )
    write(
        tmp_path / "shipping_notes.txt",
        "Parcels leave our warehouse every weekday before noon, and tracking follows by email.\n"
        "\nWeekend orders leave on Monday.\n",
    )
    write(tmp_path / "meta.txt", "---\ntitle: From the front matter\nlanguage: fr\n---\nBonjour.\n")

    ingest(tmp_path, language="nl")

    hours = Article.objects.get(slug="opening-hours")
    assert hours.title == "Opening hours"
    assert hours.body == "We are open 9-17 on weekdays.\n\nClosed on holidays.\n"
    assert hours.language == "nl"  # --language: for files that do not say
    notes = Article.objects.get(slug="shipping_notes")
    assert notes.title == "Shipping notes"  # the first line is a sentence, not a title
    assert notes.body.startswith("Parcels leave our warehouse every weekday")
    meta = Article.objects.get(slug="meta")
    assert (meta.title, meta.body, meta.language) == ("From the front matter", "Bonjour.\n", "fr")


HTML_ARTICLE = """\
<!doctype html>
<html lang="en-GB">
<head>
  <title>Returns &amp; refunds</title>
  <meta name="keywords" content="returns, refunds">
  <link rel="canonical" href="https://help.example/returns">
</head>
<body>
  <nav><a href="/">Home</a> <a href="/help">Help centre</a></nav>
  <h1>Returns &amp; refunds</h1>
  <p>You can return   an item within <b>30 days</b>.<br>Use
     <a href="https://help.example/form">the returns form</a> or
     <a href="mailto:help@example.com">write to us</a>; see <a href="/terms">our terms</a>.</p>
  <h2>Steps</h2>
  <ol>
    <li>Open <code>Settings</code></li>
    <li>Tap Returns
      <ul><li>pick the item</li><li>pick a reason</li></ul>
    </li>
    <li>Print the label</li>
  </ol>
  <pre><code class="language-sh">curl -X POST https://api.example/returns
  --data 'order=42'</code></pre>
  <table>
    <tr><th>Plan</th><th>Return window</th></tr>
    <tr><td>Basic</td><td>30 days</td></tr>
    <tr><td>Plus</td><td>60 days</td></tr>
  </table>
  <footer>Copyright Brightwave</footer>
</body>
</html>
"""


def test_it_converts_html_to_markdown_with_its_title_links_lists_code_and_tables(
    tmp_path, lexical_only
):
    page = write(tmp_path / "returns.html", HTML_ARTICLE)
    write(
        tmp_path / "no-title.htm",
        "<body><p>Intro.</p><h1>Heading as title</h1><p>Some text.</p></body>",
    )

    ingest(tmp_path)

    article = Article.objects.get(source=str(page.resolve()))
    assert article.title == "Returns & refunds"
    assert article.url == "https://help.example/returns"
    assert article.tags == ["returns", "refunds"]
    assert article.language == "en-GB"
    body = article.body
    assert body.startswith("You can return an item within **30 days**.\nUse [the returns form]")
    assert "[the returns form](https://help.example/form)" in body
    assert "[write to us](mailto:help@example.com)" in body
    assert "see our terms." in body  # a relative link keeps its text only
    assert "## Steps\n\n1. Open `Settings`\n2. Tap Returns\n   - pick the item\n" in body
    assert "3. Print the label" in body
    assert "```sh\ncurl -X POST https://api.example/returns\n  --data 'order=42'\n```" in body
    assert "| Plan | Return window |\n| --- | --- |\n| Basic | 30 days |" in body
    assert "Home" not in body and "Copyright" not in body  # navigation and footer dropped
    assert "# Returns" not in body  # the title is not repeated as the first heading

    untitled = Article.objects.get(slug="no-title")
    assert untitled.title == "Heading as title"


def test_it_stores_html_without_scripts_styles_or_event_handlers(tmp_path, lexical_only):
    write(
        tmp_path / "hostile.html",
        """<html><head><title>Hostile page</title>
        <style>.x { background: url(javascript:alert(0)) }</style>
        <script>alert('in the head')</script></head>
        <body onload="steal()">
        <p onclick="steal()">Reset the hub by holding its button.</p>
        <script type="text/javascript">document.write('injected')</script>
        <img src="x" onerror="alert(1)">
        <a href="javascript:alert(2)">click here</a>
        <a href=" JaVa&#x09;ScRiPt:alert(3)">or here</a>
        <iframe src="https://evil.example">framed text</iframe>
        <svg><script>alert(4)</script><text>svg text</text></svg>
        <noscript>Enable JavaScript</noscript>
        <template><p>template text</p></template>
        </body></html>""",
    )

    ingest(tmp_path)

    article = Article.objects.get()
    body = article.body.lower()
    assert "reset the hub by holding its button." in body
    assert "click here" in body and "or here" in body  # link text kept, targets dropped
    for inert in (
        "alert",
        "steal",
        "injected",
        "onerror",
        "onclick",
        "javascript",
        "<",
        "framed text",
        "svg text",
        "enable javascript",
        "template text",
        "background",
    ):
        assert inert not in body, inert


def test_it_keeps_only_http_https_and_mailto_links_as_links():
    document = html_to_markdown(
        '<p><a href="https://help.example/a b(c)">web</a> <a href="http://x.example">plain</a> '
        '<a href="mailto:help@example.com">mail</a> <a href="javascript:alert(1)">js</a> '
        '<a href="JaVaScRiPt&colon;alert(2)">js2</a> <a href="data:text/html,<b>x</b>">data</a> '
        '<a href="vbscript:msgbox(1)">vb</a> <a href="/relative">relative</a> <a>none</a></p>'
    )
    assert document.body == (
        "[web](https://help.example/a%20b%28c%29) [plain](http://x.example) "
        "[mail](mailto:help@example.com) js js2 data vb relative none"
    )


@pytest.mark.parametrize(
    "tag",
    [
        "script", "style", "noscript", "template", "iframe", "object", "svg", "math", "canvas",
        "audio", "video", "select", "textarea", "nav", "footer",
    ],
)  # fmt: skip
def test_it_drops_unsafe_and_page_chrome_elements_with_their_content(tag):
    document = html_to_markdown(f"<p>Kept.</p><{tag}><p>hidden text</p></{tag}><p>Also kept.</p>")
    assert document.body == "Kept.\n\nAlso kept."


def test_it_copies_no_comments_declarations_or_processing_instructions():
    document = html_to_markdown(
        "<?xml version='1.0'?><p>a<!-- secret --><![if !supportLists]>b<![endif]>"
        "<![CDATA[hidden]]>c</p>"
    )
    assert document.body == "abc"


def test_it_escapes_text_that_would_read_as_raw_html_or_markdown_structure():
    document = html_to_markdown(
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; but 1 &lt; 2</p>"
        "<p># Not a heading</p><p>```not a fence</p><p>order_id and *stars* stay</p>"
    )
    assert document.body == (
        "\\<script>alert(1)\\</script> but 1 < 2\n\n"
        "\\# Not a heading\n\n\\```not a fence\n\norder_id and *stars* stay"
    )


def test_it_fences_code_longer_than_any_backtick_run_in_it():
    document = html_to_markdown(
        '<pre class="lang-md">\n```\n&lt;script&gt;x()&lt;/script&gt;\n```</pre><p>After.</p>'
    )
    assert document.body == "````md\n```\n<script>x()</script>\n```\n````\n\nAfter."


def test_it_reads_lists_paragraphs_and_cells_whose_end_tags_are_left_out():
    document = html_to_markdown(
        "<p>First<p>Second<ul><li>one<li>two<ol start=3><li>three<li>four</ol></ul>"
        "<table><tr><td>a<td>b<tr><td>c<td>d</table>"
    )
    assert document.body == (
        "First\n\nSecond\n\n- one\n- two\n  3. three\n  4. four\n\n"
        "| a | b |\n| --- | --- |\n| c | d |"
    )


def test_it_keeps_a_tables_header_line_with_a_caption_column_groups_or_a_footer():
    document = html_to_markdown(
        "<table><caption>Plans</caption><colgroup><col><col></colgroup>"
        "<thead><tr><th>Plan</th><th>Price</th></tr></thead>"
        "<tfoot><tr><td>Total</td><td>5 | 6</td></tr></tfoot>"
        "<tbody><tr><td>Basic</td><td>5</td></tr></tbody></table>"
    )
    assert document.body == (
        "Plans\n\n| Plan | Price |\n| --- | --- |\n| Basic | 5 |\n| Total | 5 \\| 6 |"
    )


def test_it_reads_layout_tables_as_blocks_and_a_table_in_a_cell_as_text():
    document = html_to_markdown(
        "<table><tr><td><h2>Pairing</h2><p>Hold the button.</p><ul><li>a<li>b</ul>"
        "<table><tr><th>Light</th><th>Means</th></tr><tr><td>"
        "<table><tr><td>teal</td><td>blinking</td></tr></table></td><td>pairing</td></tr>"
        "</table></td></tr></table>"
    )
    assert document.body == (
        "## Pairing\n\nHold the button.\n\n- a\n- b\n\n"
        "| Light | Means |\n| --- | --- |\n| teal blinking | pairing |"
    )


def test_it_reads_the_body_after_a_head_that_is_never_closed():
    document = html_to_markdown("<html><head><title>Hub</title><p>Reset it.</p></html>")
    assert (document.title, document.body) == ("Hub", "Reset it.")


def test_it_keeps_the_text_of_a_page_nested_too_deeply_to_convert():
    document = html_to_markdown(
        "<div>" * 2000 + "<p>Deep &lt;b&gt; text</p><p>More</p>" + "</div>" * 2000
    )
    assert document.body == "Deep \\<b> text More"


# --- Re-ingesting ---------------------------------------------------------------------------


def test_it_updates_the_article_when_the_same_file_is_ingested_again(tmp_path):
    lamp = write(tmp_path / "lamp.md", LAMP)
    write(tmp_path / "invoice.md", OTHER)
    ingest(tmp_path)
    article = Article.objects.get(slug="lamp")
    assert any("glows teal" in text for text in hit_texts("zephyr lamp glows teal", article))

    write(lamp, LAMP.replace("glows teal", "blinks amber"))
    out, _ = ingest(tmp_path)

    assert "0 created, 1 updated, 1 unchanged" in out
    assert Article.objects.count() == 2
    article = Article.objects.get(slug="lamp")  # the same article, not a copy
    assert "blinks amber" in article.body and "teal" not in article.body
    assert any("blinks amber" in text for text in hit_texts("zephyr lamp blinks amber", article))
    assert not any("teal" in hit.text for hit in search("zephyr lamp glows teal", 10))
    passages = Passage.objects.filter(article=article)
    assert passages and all("teal" not in passage.text for passage in passages)


def test_it_writes_nothing_when_an_unchanged_file_is_ingested_again(tmp_path):
    write(tmp_path / "lamp.md", LAMP)
    ingest(tmp_path)
    article = Article.objects.get()
    passages = list(Passage.objects.values_list("pk", "embedding"))
    assert passages

    out, _ = ingest(tmp_path)

    assert "1 file: 0 created, 0 updated, 1 unchanged, 0 skipped" in out
    assert "0 articles re-indexed" in out
    assert Article.objects.get().updated_at == article.updated_at
    assert list(Passage.objects.values_list("pk", "embedding")) == passages


def test_it_takes_over_an_article_with_the_same_slug_that_came_from_no_file(tmp_path, lexical_only):
    written_here = Article.objects.create(
        slug="lamp", title="Old lamp", body="Old text.\n", language="de"
    )
    lamp = write(tmp_path / "lamp.md", LAMP)

    out, err = ingest(tmp_path)

    assert Article.objects.count() == 1
    article = Article.objects.get()
    assert article.pk == written_here.pk
    assert article.source == str(lamp.resolve())
    assert article.title == "Pairing the Zephyr lamp"
    assert article.language == "de"  # the file does not say: the article keeps its own
    assert "took over the existing article 'lamp'" in err
    assert "0 created, 1 updated" in out


def test_it_gives_a_taken_slug_a_number_and_keeps_it_when_ingesting_again(tmp_path, lexical_only):
    write(tmp_path / "a" / "faq.md", "# FAQ A\n\nFirst folder.\n")
    write(tmp_path / "b" / "faq.md", "# FAQ B\n\nSecond folder.\n")
    write(tmp_path / "c" / "other.md", "---\ntitle: Other\nslug: faq\n---\nThird.\n")

    _, err = ingest(tmp_path)

    slugs = dict(Article.objects.values_list("title", "slug"))
    assert slugs == {"FAQ A": "faq", "FAQ B": "faq-2", "Other": "faq-3"}
    assert "the slug 'faq' is taken by another article: using 'faq-2'" in err
    assert "using 'faq-3'" in err

    out, err = ingest(tmp_path / "b", tmp_path / "c", tmp_path / "a")  # another order

    assert dict(Article.objects.values_list("title", "slug")) == slugs
    assert "0 created, 0 updated, 3 unchanged" in out
    assert "is taken by" not in err


# --- Unreadable and bad input ---------------------------------------------------------------


def test_it_reports_files_that_are_not_utf8_text_by_name_and_ingests_the_rest(
    tmp_path, lexical_only
):
    write(tmp_path / "good.md", "# Good\n\nReadable text.\n")
    (tmp_path / "latin1.txt").write_bytes(
        "Caf\xe9 opening hours\n\nWe open at 8.\n".encode("latin-1")
    )
    (tmp_path / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "utf16.html").write_bytes("<p>Hello</p>".encode("utf-16"))

    out, err = ingest(tmp_path)

    assert f"skipped {tmp_path / 'latin1.txt'}: unreadable: not UTF-8 text" in err
    assert f"skipped {tmp_path / 'image.md'}: unreadable: binary file" in err
    assert f"skipped {tmp_path / 'utf16.html'}: unreadable" in err
    assert "4 files: 1 created, 0 updated, 0 unchanged, 3 skipped (3 unreadable)" in out
    assert list(Article.objects.values_list("title", flat=True)) == ["Good"]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root, which reads a chmod 000 file anyway; the invalid-UTF-8 test "
    "and test_it_reports_a_file_it_fails_to_open_by_name cover unreadable files",
)
def test_it_reports_a_file_without_read_permission_by_name_and_ingests_the_rest(
    tmp_path, lexical_only
):
    write(tmp_path / "good.md", "# Good\n\nReadable text.\n")
    secret = write(tmp_path / "secret.md", "# Secret\n\nNo access.\n")
    secret.chmod(0)
    try:
        out, err = ingest(tmp_path)
    finally:
        secret.chmod(0o644)
    assert f"skipped {secret}: unreadable: Permission denied" in err
    assert list(Article.objects.values_list("title", flat=True)) == ["Good"]


def test_it_reports_a_file_it_fails_to_open_by_name(tmp_path, lexical_only, monkeypatch):
    write(tmp_path / "good.md", "# Good\n\nReadable text.\n")
    locked = write(tmp_path / "locked.md", "# Locked\n\nNo access.\n")
    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "locked.md":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    out, err = ingest(tmp_path)

    assert f"skipped {locked}: unreadable: Permission denied" in err
    assert "1 created" in out and "1 skipped (1 unreadable)" in out
    assert list(Article.objects.values_list("title", flat=True)) == ["Good"]


def test_it_skips_a_file_larger_than_2_mb_by_default(tmp_path, lexical_only):
    write(tmp_path / "small.md", "# Small\n\nFits.\n")
    huge = write(tmp_path / "huge.md", "# Huge\n\n" + "word " * (2 * 1024 * 1024 // 5 + 10))

    out, err = ingest(tmp_path)

    size = huge.stat().st_size
    assert f"skipped {huge}: too large: {size:,} bytes, over the limit of 2,097,152 bytes" in err
    assert "1 skipped (1 too large)" in out
    assert list(Article.objects.values_list("title", flat=True)) == ["Small"]


def test_it_skips_a_file_larger_than_kb_max_file_bytes(tmp_path, lexical_only, settings):
    settings.KB_MAX_FILE_BYTES = 100
    write(tmp_path / "small.md", "# Small\n\nFits.\n")
    write(tmp_path / "big.txt", "Big\n\n" + "x" * 200)

    _, err = ingest(tmp_path)

    assert "big.txt: too large: 205 bytes, over the limit of 100 bytes" in err
    assert list(Article.objects.values_list("title", flat=True)) == ["Small"]


def test_it_skips_articles_with_no_text(tmp_path, lexical_only):
    write(tmp_path / "good.md", "# Good\n\nSome text.\n")
    write(tmp_path / "empty.md", "")
    write(tmp_path / "front-matter-only.md", "---\ntitle: Nothing below\n---\n\n")
    write(tmp_path / "title-only.md", "# Just a title\n")
    write(tmp_path / "blank.txt", "   \n\n\t\n")
    write(
        tmp_path / "scripts-only.html",
        "<html><head><title>T</title></head><body><script>x()</script><nav>Menu</nav></body>",
    )

    out, err = ingest(tmp_path)

    for name in ("empty.md", "front-matter-only.md", "title-only.md", "blank.txt"):
        assert f"skipped {tmp_path / name}: no text" in err, name
    assert f"skipped {tmp_path / 'scripts-only.html'}: no text" in err
    assert "6 files: 1 created, 0 updated, 0 unchanged, 5 skipped (5 no text)" in out
    assert list(Article.objects.values_list("title", flat=True)) == ["Good"]


def test_it_reports_invalid_front_matter_by_name_and_ingests_the_rest(tmp_path, lexical_only):
    write(tmp_path / "good.md", "# Good\n\nSome text.\n")
    write(tmp_path / "bad-slug.md", "---\ntitle: Bad\nslug: not a slug!\n---\nText.\n")
    write(tmp_path / "bad-url.md", "---\ntitle: Bad\nurl: javascript:alert(1)\n---\nText.\n")
    write(tmp_path / "unclosed.md", "---\ntitle: never closed\nText.\n")

    out, err = ingest(tmp_path)

    for name in ("bad-slug.md", "bad-url.md", "unclosed.md"):
        assert f"skipped {tmp_path / name}: invalid" in err, name
    assert "3 skipped (3 invalid)" in out
    assert list(Article.objects.values_list("title", flat=True)) == ["Good"]


def test_it_refuses_a_path_that_does_not_exist_and_ingests_nothing(tmp_path, lexical_only):
    write(tmp_path / "good.md", "# Good\n\nSome text.\n")
    with pytest.raises(CommandError, match=r"no such file or folder: .*missing-folder"):
        ingest(tmp_path, tmp_path / "missing-folder")
    assert not Article.objects.exists()


def test_it_walks_folders_recursively_and_skips_hidden_and_other_files(tmp_path, lexical_only):
    write(tmp_path / "docs" / "a.md", "# A\n\nText.\n")
    write(tmp_path / "docs" / "deep" / "er" / "b.TXT", "B\n\nText.\n")
    write(tmp_path / "docs" / ".draft.md", "# Hidden\n\nText.\n")
    write(tmp_path / "docs" / ".git" / "c.md", "# In a hidden folder\n\nText.\n")
    write(tmp_path / "docs" / "logo.png", "not really a png")
    write(tmp_path / "docs" / "notes.pdf", "nor a pdf")

    out, _ = ingest(tmp_path / "docs", tmp_path / "docs" / "a.md")  # a.md only once

    assert sorted(Article.objects.values_list("title", flat=True)) == ["A", "B"]
    assert "2 files: 2 created" in out
    assert "2 other files ignored" in out


def test_it_shows_progress_with_file_counts_on_stderr(tmp_path, lexical_only):
    for name in ("one", "two", "three"):
        write(tmp_path / f"{name}.md", f"# {name}\n\nText of {name}.\n")

    out, err = ingest(tmp_path)

    for count in ("1/3", "2/3", "3/3"):
        assert f"ingesting: {count}" in err
    assert "indexing: 3/3 (100%)" in err
    assert "3/3" not in out  # progress goes to stderr, the summary to stdout
    assert "3 files: 3 created" in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_it_draws_the_progress_bar_in_place_on_a_terminal(tmp_path, lexical_only):
    for name in ("one", "two"):
        write(tmp_path / f"{name}.md", f"# {name}\n\nText of {name}.\n")
    err = Terminal()

    call_command("ingest_kb", str(tmp_path), stdout=io.StringIO(), stderr=err)

    output = err.getvalue()
    assert "\ringesting [" + "#" * 24 + "] 2/2 " in output
    assert "\rindexing [" + "#" * 24 + "] 2/2" in output
    assert "ingesting:" not in output  # no plain lines on a terminal


def test_it_exits_with_status_1_when_files_were_skipped_and_2_when_a_path_is_missing(
    tmp_path, transactional_db
):
    write(tmp_path / "good.md", "# Good\n\nSome text.\n")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")

    def run(*paths: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "ingest_kb", *map(str, paths)],
            cwd=ROOT,
            env=child_env(KB_EMBEDDINGS="off"),
            capture_output=True,
            text=True,
            timeout=120,
        )

    partly = run(tmp_path)
    assert partly.returncode == 1, partly.stderr
    assert f"skipped {tmp_path / 'bad.txt'}: unreadable" in partly.stderr
    assert Article.objects.filter(title="Good").exists()  # the rest went in

    assert run(tmp_path / "good.md").returncode == 0

    missing = run(tmp_path / "good.md", tmp_path / "nope")
    assert missing.returncode == 2
    assert "nope" in missing.stderr


def test_it_changes_nothing_in_a_dry_run(tmp_path, lexical_only):
    lamp = write(tmp_path / "lamp.md", LAMP)
    ingest(tmp_path)
    before = list(Article.objects.values())
    write(lamp, LAMP.replace("teal", "amber"))
    write(tmp_path / "new.md", "# New\n\nText.\n")

    out, _ = ingest(tmp_path, dry_run=True)

    assert "Dry run, nothing written." in out
    assert "1 would be created, 1 would be updated" in out
    assert list(Article.objects.values()) == before


def test_it_imports_drafts_and_keeps_the_published_flag_an_operator_set(
    tmp_path, lexical_only, staff_client
):
    lamp = write(tmp_path / "lamp.md", LAMP)
    write(tmp_path / "hidden.md", "---\ntitle: Hidden\npublished: false\n---\nText.\n")
    ingest(tmp_path, unpublished=True)
    assert not Article.objects.get(slug="lamp").published

    staff_client.post(
        ADMIN, {"action": "publish", "_selected_action": [Article.objects.get(slug="lamp").pk]}
    )
    write(lamp, LAMP.replace("teal", "amber"))
    ingest(tmp_path, unpublished=True)

    lamp_article = Article.objects.get(slug="lamp")
    assert lamp_article.published  # an operator published it; re-ingesting keeps that
    assert "amber" in lamp_article.body
    assert not Article.objects.get(slug="hidden").published  # the file says so


def test_it_embeds_the_passages_of_ingested_articles(tmp_path):
    write(tmp_path / "lamp.md", LAMP)

    out, _ = ingest(tmp_path)

    article = Article.objects.get()
    passages = list(Passage.objects.filter(article=article))
    assert passages
    assert all(p.embedding and p.embedding_model for p in passages)
    assert all(p.article_hash == article.content_hash for p in passages)
    assert "Search index: 1 article re-indexed" in out


# --- The admin ------------------------------------------------------------------------------


def change_form_data(response: Any) -> dict[str, Any]:
    """What the admin change form would post back unchanged."""
    form = response.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field, BooleanField):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{name}"] = value
        for subform in formset.forms:
            for name in subform.fields:
                value = subform[name].value()
                if value is not None:
                    data[f"{subform.prefix}-{name}"] = value
    return data


@pytest.fixture
def lamp_and_invoice(tmp_path: Path) -> Article:
    write(tmp_path / "lamp.md", LAMP)
    write(tmp_path / "invoice.md", OTHER)
    ingest(tmp_path)
    return Article.objects.get(slug="lamp")


def test_it_shows_script_text_in_an_article_escaped_in_the_admin(
    tmp_path, staff_client, lexical_only
):
    write(
        tmp_path / "warning.md",
        "# Never paste code\n\nDo not paste <script>alert('x')</script> into the app.\n",
    )
    ingest(tmp_path)
    article = Article.objects.get()
    assert "<script>alert('x')</script>" in article.body  # stored as written: it is text

    for url in (f"{ADMIN}{article.pk}/change/", ADMIN + "?q=paste"):
        html = staff_client.get(url).content.decode()
        assert "<script>alert" not in html
    change_page = staff_client.get(f"{ADMIN}{article.pk}/change/").content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in change_page  # body and passage


def test_it_removes_an_article_unpublished_with_the_admin_action_from_search_at_once(
    staff_client, lamp_and_invoice, django_capture_on_commit_callbacks
):
    lamp = lamp_and_invoice
    assert hit_texts("zephyr lamp glows teal", lamp)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(ADMIN, {"action": "unpublish", "_selected_action": [lamp.pk]})

    assert response.status_code == 302
    assert not Article.objects.get(pk=lamp.pk).published
    assert all(hit.article_id != lamp.pk for hit in search("zephyr lamp glows teal", 10))
    assert not Passage.objects.filter(article=lamp).exists()

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(ADMIN, {"action": "publish", "_selected_action": [lamp.pk]})

    assert hit_texts("zephyr lamp glows teal", lamp)
    assert Passage.objects.filter(article=lamp).exists()


def test_it_removes_an_article_unpublished_in_the_edit_form_from_search_at_once(
    staff_client, lamp_and_invoice
):
    lamp = lamp_and_invoice
    url = f"{ADMIN}{lamp.pk}/change/"
    data = change_form_data(staff_client.get(url))
    del data["published"]

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert not Article.objects.get(pk=lamp.pk).published
    assert all(hit.article_id != lamp.pk for hit in search("zephyr lamp glows teal", 10))


def test_it_makes_search_find_the_new_text_and_not_the_old_after_an_admin_edit(
    staff_client, lamp_and_invoice, django_capture_on_commit_callbacks
):
    lamp = lamp_and_invoice
    url = f"{ADMIN}{lamp.pk}/change/"
    data = change_form_data(staff_client.get(url))
    assert data["tags"] == "lamps, pairing"
    data["body"] = data["body"].replace("glows teal", "flashes violet").replace("\n", "\r\n")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert callbacks  # passages are rebuilt after the commit, before the next question
    article = Article.objects.get(pk=lamp.pk)
    assert "\r" not in article.body and article.tags == ["lamps", "pairing"]
    passages = Passage.objects.filter(article=article)
    assert any("flashes violet" in p.text for p in passages)
    assert all(p.article_hash == article.content_hash and p.embedding for p in passages)
    assert any("flashes violet" in t for t in hit_texts("zephyr lamp flashes violet", article))
    assert not any("teal" in hit.text for hit in search("zephyr lamp glows teal", 10))


def test_it_rejects_an_empty_or_blank_body_in_the_admin(staff_client, lexical_only):
    for body in ("", "   \r\n \t \r\n"):
        response = staff_client.post(
            ADMIN + "add/",
            {
                "title": "Empty",
                "slug": "empty",
                "body": body,
                "language": "en",
                "published": "on",
                **NO_INLINE_ROWS,
            },
        )
        assert response.status_code == 200
        assert response.context["adminform"].form.errors["body"] == [
            "Write the article's text: an empty article cannot answer."
        ]
    assert not Article.objects.exists()


def test_it_stores_comma_separated_tags_from_the_admin_as_a_list(
    staff_client, lexical_only, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            ADMIN + "add/",
            {
                "title": "Gift cards",
                "slug": "gift-cards",
                "body": "Gift cards are sold online from 10 euros.",
                "tags": " gifts,  cards ,, Gifts ",
                "language": "en",
                "published": "on",
                **NO_INLINE_ROWS,
            },
        )
    assert response.status_code == 302
    article = Article.objects.get()
    assert article.tags == ["gifts", "cards"]
    assert article.source == ""
    assert Passage.objects.filter(article=article).exists()  # indexed after the commit
    page = staff_client.get(f"{ADMIN}{article.pk}/change/").content.decode()
    assert 'value="gifts, cards"' in page


def test_it_lists_articles_with_their_passages_and_source_in_the_admin(
    staff_client, lamp_and_invoice
):
    lamp = lamp_and_invoice
    listing = staff_client.get(ADMIN)
    assert listing.status_code == 200
    rows = {a.pk: a for a in listing.context["cl"].result_list}
    assert rows[lamp.pk].passage_total == Passage.objects.filter(article=lamp).count() > 0
    assert lamp.source in listing.content.decode()
    assert [a.pk for a in staff_client.get(ADMIN, {"q": "lamps"}).context["cl"].result_list] == [
        lamp.pk
    ]  # tags are searched

    page = staff_client.get(f"{ADMIN}{lamp.pk}/change/")
    (inline,) = [
        i for i in page.context["inline_admin_formsets"] if i.formset.model is Passage
    ]
    assert not inline.has_add_permission and not inline.has_change_permission
    assert [form.original.heading for form in inline] == list(
        Passage.objects.filter(article=lamp).order_by("position").values_list("heading", flat=True)
    )
    assert "Move the lamp closer to the hub" in page.content.decode()


def test_re_ingesting_a_folder_re_indexes_only_the_files_that_changed(tmp_path):
    for n in range(5):
        write(tmp_path / f"article-{n}.md", f"# Article {n}\n\nThe answer is number {n}.\n")
    ingest(tmp_path)
    for n in (1, 3, 4):
        write(tmp_path / f"article-{n}.md", f"# Article {n}\n\nThe answer is now {n + 10}.\n")

    out, _ = ingest(tmp_path)

    assert "Search index: 3 articles re-indexed" in out
