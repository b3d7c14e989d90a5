"""static/common/markdown.js in a real Chromium (Debian's package, driven by Playwright): what
Markdown in a reply becomes, and that nothing a reply holds can run script, load an image or
link anywhere but http(s) and mailto:. The page is the chat page (which loads the module); the
reply text goes straight to the module, so every payload is tried without a worker."""

from __future__ import annotations

import pytest

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.default_pass_only(
        reason="what the browser makes of a reply's text, whatever stores it"
    ),
]

# Each payload sets window.__pwned (or opens a dialog) if it ever runs.
XSS_PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
    '<iframe src="javascript:window.top.__pwned=3"></iframe>',
    '<svg onload="window.__pwned=4"></svg>',
    '<a href="javascript:window.__pwned=5">click me</a>',
    "[click me](javascript:window.__pwned=6)",
    "[click me](JaVaScRiPt:window.__pwned=7)",
    "[click me](java&#09;script:window.__pwned=8)",
    "<javascript:window.__pwned=9>",
    "[click me][evil]\n\n[evil]: javascript:window.__pwned=10",
    "[click me](data:text/html,<script>window.top.__pwned=11</script>)",
    "![x](javascript:window.__pwned=12)",
    '![x" onerror="window.__pwned=13](https://help.example.com/a.png)',
    '<details open ontoggle="window.__pwned=14">x</details>',
    '<style>*{display:none}</style><b onmouseover="window.__pwned=15">hover</b>',
    "| a | b |\n|---|---|\n"
    '| <img src=x onerror="window.__pwned=16"> | [x](javascript:window.__pwned=17) |',
    '- <img src=x onerror="window.__pwned=18">\n- **<script>window.__pwned=19</script>**',
    '`<img src=x onerror="window.__pwned=20">`',
    "```html\n<script>window.__pwned=21</script>\n```",
    '<form action="javascript:window.__pwned=22"><button>go</button></form>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=23">',
    '<object data="javascript:window.__pwned=24"></object>',
    '<embed src="javascript:window.__pwned=25">',
    '<base href="javascript:window.__pwned=26//"><a href="/x">relative</a>',
    '<meta http-equiv="refresh" content="0;url=javascript:window.__pwned=27">',
]

FORBIDDEN = (
    "script, img, iframe, svg, math, object, embed, form, input, button, style, details, base,"
    " meta, link, video, audio, source"
)
HANDLERS = "[onerror], [onload], [onclick], [onmouseover], [ontoggle], [style], [src], [action]"


@pytest.fixture
def page(chromium, asgi_server):
    base = asgi_server(LLM_PROVIDER="offline")
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    page.goto(f"{base}/chat/")
    page.wait_for_function("() => window.ReplyMarkdown !== undefined")
    yield page
    context.close()


def render(page, text: str) -> dict:
    """Render `text` into a box in the page; returns its HTML and text."""
    return page.evaluate(
        """(text) => {
            const box = document.createElement("div");
            box.className = "rendered md";
            box.append(window.ReplyMarkdown.fragment(text));
            document.body.append(box);
            return { html: box.innerHTML, text: box.innerText };
        }""",
        text,
    )


def test_it_renders_lists_bold_italic_code_links_and_a_table_as_markup(page):
    text = (
        "Here is **what to do**, *step by step*:\n\n"
        "1. Open `Settings`\n2. Choose **Returns**\n\n"
        "- one\n- two\n\n"
        "See [our returns page](https://help.example.com/returns?a=1&b=2) or mail "
        "<support@example.com>.\n\n"
        "| Plan | Price |\n|:-----|------:|\n| Basic | €5 |\n| Pro | €9 |\n"
    )
    render(page, text)
    box = page.locator(".rendered").last
    assert box.locator("strong").all_inner_texts() == ["what to do", "Returns"]
    assert box.locator("em").all_inner_texts() == ["step by step"]
    assert box.locator("ol > li").all_inner_texts() == ["Open Settings", "Choose Returns"]
    assert box.locator("ul > li").all_inner_texts() == ["one", "two"]
    assert box.locator("code").all_inner_texts() == ["Settings"]
    links = box.locator("a")
    assert [(a.inner_text(), a.get_attribute("href")) for a in links.all()] == [
        ("our returns page", "https://help.example.com/returns?a=1&b=2"),
        ("support@example.com", "mailto:support@example.com"),
    ]
    for link in links.all():
        assert link.get_attribute("target") == "_blank"
        assert set(link.get_attribute("rel").split()) == {"noopener", "noreferrer", "nofollow"}
    table = box.locator(".md-table > table")
    assert table.locator("th").all_inner_texts() == ["Plan", "Price"]
    assert [th.get_attribute("align") for th in table.locator("th").all()] == ["left", "right"]
    assert table.locator("tbody tr").count() == 2
    assert table.locator("td").all_inner_texts() == ["Basic", "€5", "Pro", "€9"]


def test_it_keeps_single_newlines_as_line_breaks(page):
    result = render(page, "Thanks for waiting.\nYour parcel left today.\n\nAnything else?")
    assert result["text"] == "Thanks for waiting.\nYour parcel left today.\n\nAnything else?"
    assert page.locator(".rendered").last.locator("br").count() == 1


def test_html_and_script_links_in_a_reply_never_run(page):
    for payload in XSS_PAYLOADS:
        render(page, f"Before {payload} after")
        box = page.locator(".rendered").last
        # Hovering and clicking whatever is left gives a payload every chance to run.
        for node in box.locator("a, td, li, code, pre").all():
            if node.is_visible():
                node.hover()
        for link in box.locator("a").all():
            link.click(modifiers=["Control"])  # a new tab at most, never this page
        assert box.locator(FORBIDDEN).count() == 0, payload
        assert box.locator(HANDLERS).count() == 0, payload
        for link in box.locator("a").all():
            assert link.get_attribute("href").startswith(("https:", "http:", "mailto:")), payload
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []


def test_raw_html_in_a_reply_is_shown_as_the_characters_it_is(page):
    result = render(page, 'Type <b>bold</b> or <img src=x onerror="window.__pwned=1"> here')
    assert result["text"] == 'Type <b>bold</b> or <img src=x onerror="window.__pwned=1"> here'
    block = render(page, "<script>window.__pwned=2</script>")
    assert block["text"] == "<script>window.__pwned=2</script>"
    assert page.locator(".rendered b, .rendered script, .rendered img").count() == 0


def test_it_links_only_absolute_http_https_and_mailto_urls(page):
    text = "\n".join(
        [
            "[safe](https://help.example.com/a)",
            "[plain http](http://help.example.com/b)",
            "[mail](mailto:someone@example.com)",
            "[relative](/admin/)",
            "[protocol relative](//evil.example.com/x)",
            "[data](data:text/html,hi)",
            "[vb](vbscript:msgbox(1))",
            "[file](file:///etc/passwd)",
            "[tel](tel:+123)",
            "bare https://help.example.com/c and www.example.com",
        ]
    )
    render(page, text)
    box = page.locator(".rendered").last
    assert [(a.inner_text(), a.get_attribute("href")) for a in box.locator("a").all()] == [
        ("safe", "https://help.example.com/a"),
        ("plain http", "http://help.example.com/b"),
        ("mail", "mailto:someone@example.com"),
        ("https://help.example.com/c", "https://help.example.com/c"),
        ("www.example.com", "http://www.example.com/"),
    ]
    # The rest keep their text, as text.
    for label in ("relative", "protocol relative", "data", "vb", "file", "tel"):
        assert label in box.inner_text()


def test_it_shows_no_images_only_a_link_to_them(page):
    images = "![the label](https://help.example.com/label.png) and ![x](data:image/png;base64,AA)"
    render(page, images)
    box = page.locator(".rendered").last
    assert box.locator("img").count() == 0
    assert [(a.inner_text(), a.get_attribute("href")) for a in box.locator("a").all()] == [
        ("the label", "https://help.example.com/label.png")
    ]
    assert box.inner_text() == "the label and x"


HALF_WRITTEN = [
    ("Please **check", "Please **check"),
    ("| Plan | Price |\n|---", "| Plan | Price |\n|---"),
    ("See [the page](https://help.exa", "See [the page](https://help.exa"),
    ("Type <img src=x onerr", "Type <img src=x onerr"),
    ("```\ncode so far", "code so far"),
]


def test_half_written_markdown_renders_as_the_text_so_far(page):
    for partial, shown in HALF_WRITTEN:
        result = render(page, partial)
        assert result["text"].strip() == shown, partial
        assert page.locator(".rendered").last.locator(FORBIDDEN).count() == 0, partial
    assert page.evaluate("window.__pwned") is None


def test_a_wide_table_scrolls_inside_a_390px_bubble(chromium, asgi_server):
    base = asgi_server(LLM_PROVIDER="offline")
    context = chromium.new_context(viewport={"width": 390, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{base}/chat/")
        page.wait_for_function("() => window.ReplyMarkdown !== undefined")
        header = "| " + " | ".join(f"Column {i}" for i in range(8)) + " |"
        rule = "|" + "---|" * 8
        row = "| " + " | ".join(f"value-{i}-wide" for i in range(8)) + " |"
        page.evaluate(
            """(text) => {
                const message = document.createElement("div");
                message.className = "message message--bot";
                const box = document.createElement("div");
                box.className = "text md";
                box.append(window.ReplyMarkdown.fragment(text));
                message.append(box);
                document.querySelector("[role=log]").append(message);
            }""",
            f"Prices:\n\n{header}\n{rule}\n{row}\n",
        )
        bubble = page.locator(".message--bot").last.bounding_box()
        scroller = page.locator(".message--bot .md-table").last
        assert bubble["x"] >= 0 and bubble["x"] + bubble["width"] <= 390
        assert scroller.evaluate("s => s.scrollWidth > s.clientWidth")  # it scrolls sideways
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
