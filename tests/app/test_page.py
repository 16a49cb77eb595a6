"""The draw-a-digit page in a real browser: Playwright driving Debian's Chromium against the running service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench import serve
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import encode
from training.data import Mnist

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
]
SEVEN = [[(70, 60), (200, 60), (120, 230)]]
STAR = [[(140, 30), (175, 240), (40, 110), (240, 110), (105, 240), (140, 30)], [(60, 260), (230, 260)]]
ZERO = [[(140, 40), (90, 70), (75, 140), (95, 215), (140, 240), (185, 215), (205, 140), (190, 70), (140, 40)]]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server: str, tmp_path: Path) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    page.goto(f"http://{live_server}/")
    page.wait_for_selector("#model option", state="attached")
    yield page
    context.close()


def draw(page, strokes: list[list[tuple[int, int]]], pad: str = "#pad", width: int = 280) -> None:
    """Mouse strokes on a pad (the 280x280 digit pad by default), in the pad's own coordinates."""
    box = page.locator(pad).bounding_box()
    scale = box["width"] / width
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=12)
        page.mouse.up()


def predicted(page) -> str:
    page.wait_for_function("() => /^[0-9]$/.test(document.getElementById('digit').textContent)")
    page.wait_for_selector("#maps canvas")
    return page.locator("#digit").inner_text()


def painted(page, selector: str) -> bool:
    """True when the canvas has at least two different pixel colours."""
    return page.evaluate(
        """(selector) => {
            const c = document.querySelector(selector);
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 4; i < data.length; i += 4) if (data[i] !== data[0] || data[i+1] !== data[1]) return true;
            return false;
        }""",
        selector,
    )


def test_drawn_digits_are_recognised_with_bars_and_heatmaps(page, tmp_path: Path) -> None:
    draw(page, SEVEN)
    assert predicted(page) == "7"
    widths = page.eval_on_selector_all("#bars .fill", "els => els.map(e => parseFloat(e.style.width))")
    assert len(widths) == 10
    assert max(widths) > 50
    assert painted(page, "#seen")
    assert page.locator("#maps canvas").count() >= 32 + 64  # every conv layer's maps
    assert painted(page, "#maps canvas")
    page.screenshot(path=str(tmp_path / "seven.png"), full_page=True)

    page.click("#clear")
    draw(page, ZERO)
    assert predicted(page) == "0"
    page.screenshot(path=str(tmp_path / "zero.png"), full_page=True)


def test_switching_the_model_changes_the_request(page) -> None:
    draw(page, SEVEN)
    predicted(page)
    with page.expect_request(lambda r: "/predict?model=svm" in r.url):
        page.select_option("#model", "svm")
    page.wait_for_function("() => document.getElementById('maps-title').textContent.includes('svm')")
    assert page.locator("#maps .layer").count() == 2  # evidence maps and weight templates


def test_uploading_a_png_works(page, tmp_path: Path, mnist_sample: Mnist) -> None:
    path = tmp_path / "two.png"
    path.write_bytes(encode(255 - mnist_sample.test.images[1]))  # a 2, dark on light
    page.set_input_files("#file", str(path))
    assert predicted(page) == str(mnist_sample.test.labels[1])


def test_a_drawing_that_is_no_digit_is_called_so(page) -> None:
    draw(page, STAR)
    page.wait_for_function("() => document.getElementById('digit').textContent.includes('look like a digit')")
    assert page.locator("#digit").inner_text() == "That doesn't look like a digit"
    assert "digit score 0." in page.locator("#confidence").inner_text()
    assert "best guess" in page.locator("#confidence").inner_text()
    page.click("#clear")
    draw(page, SEVEN)
    assert predicted(page) == "7"  # a digit again: the big number is back


def test_errors_are_shown_clearly(page, tmp_path: Path) -> None:
    page.click("#classify")  # a blank pad
    page.wait_for_selector("#error:not([hidden])")
    assert "blank" in page.locator("#error").inner_text()
    path = tmp_path / "notes.png"
    path.write_bytes(b"these are not pixels")
    page.set_input_files("#file", str(path))
    page.wait_for_function("() => document.getElementById('error').textContent.includes('not an image')")


def test_phone_sized_screen(browser, live_server: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"http://{live_server}/")
    pad = page.locator("#pad").bounding_box()
    assert pad["x"] >= 0
    assert pad["x"] + pad["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    context.close()


def test_page_works_offline(page) -> None:
    sources = page.eval_on_selector_all("script[src], link[href]", "els => els.map(e => e.src || e.href)")
    assert all("127.0.0.1" in s for s in sources), sources


NUMBER = [  # 1 7 0 on the 840x240 number pad
    [(120, 40), (120, 200)],
    [(220, 50), (330, 50), (260, 200)],
    [(470, 40), (425, 70), (410, 120), (425, 175), (470, 200), (515, 175), (530, 120), (515, 70), (470, 40)],
]


def draw_number(page, strokes: list[list[tuple[int, int]]]) -> None:
    """Mouse strokes on the 840-px-wide number pad, in pad coordinates."""
    draw(page, strokes, "#number-pad", 840)


def test_number_mode_reads_a_written_number_and_shows_each_digit(page, tmp_path: Path) -> None:
    page.click("#mode-number")
    assert page.locator("#pad").is_hidden()
    draw_number(page, NUMBER)
    with page.expect_response(lambda r: "/read?model=cnn" in r.url):  # the whole drawing, read now
        page.click("#number-read")
    page.wait_for_function("() => /^[0-9]+$/.test(document.getElementById('number-text').textContent)")
    assert page.locator("#number-text").inner_text() == "170"
    assert "sure of the whole number" in page.locator("#number-confidence").inner_text()
    assert page.locator("#number-digits button").count() == 3
    assert painted(page, "#number-boxes")  # the boxes and answers drawn over the drawing
    page.screenshot(path=str(tmp_path / "number.png"), full_page=True)
    page.locator("#number-digits button").nth(1).click()
    assert predicted(page) == "7"  # the clicked digit's answer, bars and maps
    assert page.locator("#maps canvas").count() >= 32 + 64


def test_number_mode_reads_an_uploaded_picture(page, tmp_path: Path, mnist_sample: Mnist) -> None:
    images = mnist_sample.test.images
    row = np.zeros((40, 160), np.uint8)
    for k in range(4):
        row[6:34, k * 40 + 6 : k * 40 + 34] = images[k]
    path = tmp_path / "number.png"
    path.write_bytes(encode(255 - row))
    page.click("#mode-number")
    page.set_input_files("#number-file", str(path))
    expected = "".join(str(label) for label in mnist_sample.test.labels[:4])
    page.wait_for_function(f"() => document.getElementById('number-text').textContent === '{expected}'")
    page.click("#number-clear")
    page.click("#number-read")  # a blank pad
    page.wait_for_function("() => document.getElementById('number-confidence').textContent.includes('blank')")
    page.click("#mode-digit")
    assert page.locator("#pad").is_visible()


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    """The service with MNIST_API_KEY set."""
    port = free_port()
    env = {**service_env(port), "MNIST_API_KEY": "s3cret"}
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", env):
        yield f"127.0.0.1:{port}"


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(browser, keyed_server: str) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    page.goto(f"http://{keyed_server}/")
    page.wait_for_selector("#key-form:not([hidden])")  # /models answered 401: the page says so
    assert "needs an API key" in page.locator("#error").inner_text()
    assert page.locator("#model option").count() == 0

    page.fill("#api-key", "wrong")
    page.click("#key-form button")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('refused')")

    page.fill("#api-key", "s3cret")
    with page.expect_request(lambda r: r.url.endswith("/models") and r.headers.get("x-api-key") == "s3cret"):
        page.click("#key-form button")
    page.wait_for_selector("#model option", state="attached")
    draw(page, SEVEN)
    assert predicted(page) == "7"  # /predict and /activations carried the key too
    assert page.evaluate("sessionStorage.getItem('mnist-api-key')") == "s3cret"
    assert page.evaluate("localStorage.length") == 0  # never kept beyond the tab's session
    context.close()


def test_without_the_key_a_prediction_says_why(browser, keyed_server: str) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    page.goto(f"http://{keyed_server}/")
    page.wait_for_selector("#key-form:not([hidden])")
    page.click("#classify")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('needs an API key')")
    assert page.locator("#digit").inner_text() == "?"
    context.close()


def test_the_page_runs_under_its_content_security_policy(browser, live_server: str) -> None:
    """The browser enforces the policy: anything it blocked would be logged as "Refused to ..." in the console."""
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    response = page.goto(f"http://{live_server}/")
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    page.wait_for_selector("#model option", state="attached")  # the script ran
    draw(page, SEVEN)
    assert predicted(page) == "7"
    assert not [text for text in console if "Refused" in text or "Content Security Policy" in text]
    context.close()


def test_attribution_heatmap_with_method_and_target_pickers(page) -> None:
    draw(page, SEVEN)
    assert predicted(page) == "7"
    page.wait_for_selector("#explain:not([hidden]) #explain-scale .scale")
    assert painted(page, "#explain-map")
    assert "Why 7" in page.locator("#explain-note").inner_text()
    methods = page.eval_on_selector_all("#explain-method option", "els => els.map(e => e.value)")
    assert methods[0] == "integrated_gradients"
    assert "occlusion" in methods
    with page.expect_request(lambda r: "/explain?" in r.url and "target=9" in r.url):
        page.select_option("#explain-target", "9")
    page.wait_for_function("() => document.getElementById('explain-note').textContent.includes('Why 9')")
    with page.expect_request(lambda r: "method=occlusion" in r.url and "target=9" in r.url):
        page.select_option("#explain-method", "occlusion")
    page.wait_for_function("() => document.getElementById('explain-note').textContent.includes('Occlusion')")
    page.click("#clear")
    assert page.locator("#explain").is_hidden()
