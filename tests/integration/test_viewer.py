"""Image files over HTTP, and the viewer page in a real headless Chromium.

A real ``datamint serve`` process; DICOM series, NIfTI and PNG files sent as multipart
parts; the page at ``/`` driven with Selenium, its overlay checked in screenshot pixels.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from datamint_core import load_model, save_model
from datamint_core.io import read
from datamint_core.io.writers import PALETTE
from tests.core.dicom_files import write_series
from tests.core.sample_models import ThresholdSegmenter
from tests.integration._server import Server, call, datamint_serve, encode_parts
from tests.integration.serving_models import HOSTILE_LABELS, HOSTILE_PARAM, HostileLabelSegmenter

nibabel = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

THRESHOLD = 100.0
# The phantom's bright block: slices 5-10, rows 20-39, columns 10-29 of a 16x64x64 volume.
BLOCK = (slice(5, 11), slice(20, 40), slice(10, 30))


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pydicom")
        yield


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("viewer") / "segmenter"
    save_model(ThresholdSegmenter(threshold=THRESHOLD), path)
    return path


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("viewer-logs") / "server.log"
    process = datamint_serve(model_path, log, "--max-request-size", "4M")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def phantom_nifti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    volume = np.random.default_rng(4).integers(0, 40, (16, 64, 64)).astype(np.int16)
    volume[BLOCK] = 200
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    path = tmp_path_factory.mktemp("phantom") / "phantom.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume.transpose(2, 1, 0), affine), path)
    return path


def send_files(server: Server, files: list[Path], params: dict, endpoint="invocations", **extra):
    request = {
        "resources": [{"id": "upload", "pixel_data": {"encoding": "multipart", "part": "scan"}}],
        "params": params,
    }
    parts = [("request", None, json.dumps(request).encode(), "application/json")]
    parts += [("scan", path.name, path.read_bytes(), "application/octet-stream") for path in files]
    body, content_type = encode_parts(parts)
    return call(f"{server.url}/{endpoint}", body, content_type, **extra)


def in_process(model_path: Path, path: Path, params: dict) -> list:
    model = load_model(str(model_path))
    return [[a.to_dict() for a in entry] for entry in model.predict([read(path)], params)]


def test_a_dicom_series_sent_as_file_parts_is_read_as_one_volume(server, model_path, tmp_path):
    write_series(tmp_path / "ct", 6, size=32, seed=8)
    files = sorted((tmp_path / "ct").iterdir())
    status, answer = send_files(server, files[::-1], {"mode": "volume"})
    assert status == 200, answer
    assert answer["predictions"] == in_process(model_path, tmp_path / "ct", {"mode": "volume"})
    assert answer["predictions"][0][0]["mask"]["shape"] == [6, 32, 32]


def test_nifti_and_png_parts_give_the_in_process_predictions(
    server, model_path, phantom_nifti, tmp_path
):
    status, answer = send_files(server, [phantom_nifti], {"mode": "volume"})
    assert status == 200, answer
    assert answer["predictions"] == in_process(model_path, phantom_nifti, {"mode": "volume"})

    picture = tmp_path / "xray.png"
    Image.fromarray((np.arange(48 * 40) % 256).reshape(48, 40).astype(np.uint8)).save(picture)
    status, answer = send_files(server, [picture], {})
    assert status == 200, answer
    assert answer["predictions"] == in_process(model_path, picture, {})


def test_a_part_that_is_no_image_file_gets_a_422_saying_what_is_accepted(server, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    status, answer = send_files(server, [notes], {})
    assert status == 422
    assert answer["error_code"] == "INVALID_RESOURCE"
    assert "Input #0: Cannot tell the format" in answer["message"]
    assert "NIfTI (.nii, .nii.gz), PNG, JPEG, .npy or .npz" in answer["message"]


def test_the_viewer_page_and_its_files_are_served_and_nothing_else(server):
    import urllib.request

    with urllib.request.urlopen(server.url + "/") as response:
        page = response.read().decode()
        assert response.headers["content-type"].startswith("text/html")
    assert '<script src="static/viewer.js">' in page and "http" not in page.split("<body>")[1]
    for name, kind in (("viewer.js", "text/javascript"), ("viewer.css", "text/css")):
        with urllib.request.urlopen(f"{server.url}/static/{name}") as response:
            assert response.headers["content-type"].startswith(kind)
    status, answer = call(f"{server.url}/static/..%2Fapp.py", method="GET")
    assert status == 404 and answer["error_code"] == "NOT_FOUND"


def test_the_viewer_page_and_its_files_forbid_inline_code_other_origins_framing_and_sniffing(
    server,
):
    import urllib.request

    for path in ("/", "/static/viewer.js", "/static/viewer.css"):
        with urllib.request.urlopen(server.url + path) as response:
            headers = response.headers
        policy = dict(
            (directive.split()[0], directive.split()[1:])
            for directive in headers["Content-Security-Policy"].split(";")
        )
        assert policy["default-src"] == ["'self'"], path
        assert policy["script-src"] == policy["style-src"] == ["'self'"], path
        assert policy["object-src"] == policy["base-uri"] == ["'none'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
        assert "unsafe" not in headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path


def test_the_viewer_page_has_no_inline_script_or_style_and_never_inserts_html():
    from html.parser import HTMLParser

    from datamint_core.serving.viewer import static_file

    inline: list[str] = []

    class Page(HTMLParser):
        def handle_starttag(self, tag, attrs):
            names = dict(attrs)
            if tag == "script" and not names.get("src"):
                inline.append("<script> without src")
            if tag == "style":
                inline.append("<style>")
            inline.extend(
                f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")
            )
            if any(str(value).startswith("javascript:") for value in names.values()):
                inline.append(f"{tag} javascript: URL")

    Page().feed(static_file("index.html").decode())
    assert inline == []
    script = static_file("viewer.js").decode()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("style',
        "createContextualFragment",
    ):
        assert sink not in script, sink


def test_the_viewer_endpoint_answers_the_predictions_and_the_8_bit_picture(
    server, model_path, phantom_nifti
):
    status, answer = send_files(server, [phantom_nifti], {"mode": "volume"}, "viewer/predict")
    assert status == 200, answer
    assert answer["predictions"] == in_process(model_path, phantom_nifti, {"mode": "volume"})
    image = answer["image"]
    assert image["kind"] == "volume" and image["shape"] == [16, 64, 64] and image["channels"] == 1
    import base64

    frames = np.frombuffer(base64.b64decode(image["data"]), np.uint8).reshape(16, 64, 64)
    assert frames[BLOCK].min() == 255 and frames[0].max() < 255


# --- the page in a real browser --------------------------------------------------------------


def chromium_driver():
    """Headless Chromium through Debian's chromedriver, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "headless Chromium is not installed here (apt-get install chromium "
            "chromium-driver; scripts/test installs them when it runs as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="datamint-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service), profile


def canvas_pixels(browser) -> np.ndarray:
    canvas = browser.find_element("id", "view-canvas")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"))


def wait_for(browser, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = browser.execute_script("return document.body.dataset.state || ''")
        if current == state:
            return
        if current == "error":
            raise AssertionError(browser.find_element("id", "status").text)
        time.sleep(0.1)
    raise AssertionError(f"the page never reached {state!r}: {browser.page_source[-2000:]}")


def test_the_viewer_page_in_chromium_draws_the_prediction_over_the_picked_file(
    server, phantom_nifti
):
    from selenium.webdriver.support.ui import Select

    browser, profile = chromium_driver()
    try:
        browser.get(server.url + "/")
        wait_for(browser, "ready")
        modes = [o.text for o in Select(browser.find_element("id", "mode-select")).options]
        assert "volume" in modes and "slice" in modes  # from /metadata
        Select(browser.find_element("id", "mode-select")).select_by_value("volume")
        browser.find_element("id", "file-input").send_keys(str(phantom_nifti))
        browser.find_element("id", "predict-button").click()
        wait_for(browser, "done")
        assert "1 annotation" in browser.find_element("id", "status").text

        shown = canvas_pixels(browser)
        height, width, _ = shown.shape
        scale_y, scale_x = height / 64, width / 64
        outline = (shown == PALETTE[0]).all(axis=2)
        reddish = (shown[..., 0] > shown[..., 1] + 60) & (shown[..., 0] > shown[..., 2] + 60)
        rows, columns = np.nonzero(reddish)
        assert outline.sum() > 100, "no mask outline drawn in the label's colour"
        # Every overlay pixel lies on the bright block (rows 20-39, columns 10-29) ...
        assert rows.min() >= 20 * scale_y - 1 and rows.max() <= 40 * scale_y + 1
        assert columns.min() >= 10 * scale_x - 1 and columns.max() <= 30 * scale_x + 1
        # ... and covers it.
        assert reddish.sum() >= 0.9 * (20 * scale_y) * (20 * scale_x)
        legend = browser.find_element("id", "legend").text
        assert legend == "bright"

        # Scrolling to a slice outside the block shows the picture with no overlay.
        browser.execute_script(
            "const s = document.getElementById('slice-slider');"
            "s.value = 0; s.dispatchEvent(new Event('input'));"
        )
        assert browser.find_element("id", "slice-label").text == "1 / 16"
        empty = canvas_pixels(browser)
        assert not (empty == PALETTE[0]).all(axis=2).any()
        assert (empty[..., 0] == empty[..., 1]).all()  # gray only

        # The download link holds the predictions as JSON. The page's policy lets it fetch
        # from its own origin only (not blob:), so the link is opened as a user would.
        page = browser.current_window_handle
        browser.execute_script("window.open(document.getElementById('download-link').href)")
        (opened,) = set(browser.window_handles) - {page}
        browser.switch_to.window(opened)
        downloaded = browser.find_element("tag name", "body").text
        browser.close()
        browser.switch_to.window(page)
        predictions = json.loads(downloaded)["predictions"]
        assert predictions[0][0]["identifier"] == "bright"
        assert predictions[0][0]["mask"]["shape"] == [16, 64, 64]
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- hostile texts in front of the page --------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("hostile-viewer")
    save_model(HostileLabelSegmenter(threshold=THRESHOLD), directory / "model")
    process = datamint_serve(directory / "model", directory / "server.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def wait_for_any(browser, states: tuple[str, ...], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = browser.execute_script("return document.body.dataset.state || ''")
        if current in states:
            return current
        time.sleep(0.1)
    raise AssertionError(f"the page never reached {states}: {browser.page_source[-2000:]}")


def test_html_in_label_names_param_names_messages_and_file_names_is_shown_as_text_never_run(
    hostile_server, phantom_nifti, tmp_path
):
    from selenium.webdriver.support.ui import Select

    hostile_file = tmp_path / "<img src=x onerror=window.__pwned=4>.nii.gz"
    shutil.copy(phantom_nifti, hostile_file)
    hostile_value = "<img src=x onerror=window.__pwned=5>"
    browser, profile = chromium_driver()
    try:
        browser.get(hostile_server.url + "/")
        # Any attempt to run inline code, blocked by the policy, would be reported here.
        browser.execute_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.__violations.push(e.violatedDirective + ' ' + e.sample));"
        )
        wait_for(browser, "ready")
        modes = Select(browser.find_element("id", "mode-select"))

        # A param name from the model's metadata becomes a label's text.
        modes.select_by_value("frame_range")
        (label,) = browser.find_elements("css selector", "#mode-params label")
        assert label.text == HOSTILE_PARAM

        # A request's value echoed in the server's error message stays text in the status.
        modes.select_by_value("slice")
        browser.find_element("id", "param-slice_index").send_keys(hostile_value)
        browser.find_element("id", "file-input").send_keys(str(hostile_file))
        browser.find_element("id", "predict-button").click()
        assert wait_for_any(browser, ("error",)) == "error"
        status = browser.find_element("id", "status").text
        assert f"Param 'slice_index'='{hostile_value}' is not valid" in status

        # The model's label names become the legend's text.
        browser.execute_script("document.body.dataset.state = 'ready'")
        modes.select_by_value("volume")
        browser.find_element("id", "predict-button").click()
        wait_for(browser, "done")
        legend = browser.find_elements("css selector", "#legend li")
        assert [item.text for item in legend] == list(HOSTILE_LABELS)

        assert browser.execute_script("return window.__pwned") is None
        assert browser.execute_script("return document.querySelectorAll('img, svg').length") == 0
        assert browser.execute_script("return document.scripts.length") == 1  # viewer.js
        assert browser.execute_script("return window.__violations") == []

        # And the policy is in force: markup inserted behind the page's back cannot run.
        browser.execute_script(
            "document.body.insertAdjacentHTML('beforeend',"
            ' \'<img src="missing.png" onerror="window.__pwned=9">\')'
        )
        deadline = time.monotonic() + 10
        while not browser.execute_script("return window.__violations.length"):
            assert time.monotonic() < deadline, "the inline handler was never blocked"
            time.sleep(0.1)
        assert browser.execute_script("return window.__pwned") is None
        assert "script-src" in browser.execute_script("return window.__violations[0]")
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- an interactive model: prompts drawn on the picture -----------------------------------------


@pytest.fixture(scope="module")
def interactive_server(tmp_path_factory: pytest.TempPathFactory):
    from tests.core.test_prompts import EXAMPLE

    root = tmp_path_factory.mktemp("interactive-viewer")
    save_model(python_model=str(EXAMPLE), path=root / "grower")
    process = datamint_serve(root / "grower", root / "server.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_in_chromium_a_click_grows_a_region_where_it_was_and_a_negative_click_removes_it(
    interactive_server, tmp_path
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    picture = np.full((48, 48), 30, dtype=np.uint8)
    picture[8:21, 8:21] = 200  # blob A
    picture[28:41, 26:43] = 200  # blob B
    Image.fromarray(picture).save(tmp_path / "blobs.png")
    browser, profile = chromium_driver()

    def region(shown, rows, columns):
        scale = shown.shape[0] / 48
        return shown[
            int(rows[0] * scale) : int(rows[1] * scale),
            int(columns[0] * scale) : int(columns[1] * scale),
        ]

    def tinted(pixels):  # where the label's colour tints the picture shown before any prompt
        changed = np.abs(pixels.astype(int) - before.astype(int)).sum(axis=2) > 90
        return changed & (pixels[..., 0].astype(int) > pixels[..., 1].astype(int) + 40)

    def click(row, column, negative=False):
        canvas = browser.find_element("id", "view-canvas")
        size = canvas.size
        dx = (column + 0.5) / 48 * size["width"] - size["width"] / 2
        dy = (row + 0.5) / 48 * size["height"] - size["height"] / 2
        actions = ActionChains(browser)
        if negative:
            actions.key_down(Keys.SHIFT)
        actions.move_to_element_with_offset(canvas, int(dx), int(dy)).click()
        if negative:
            actions.key_up(Keys.SHIFT)
        actions.perform()
        wait_for(browser, "done")

    try:
        browser.get(interactive_server.url + "/")
        wait_for(browser, "ready")
        assert browser.find_element("id", "prompt-tools").is_displayed()  # from /metadata
        labels = [o.text for o in Select(browser.find_element("id", "prompt-label")).options]
        assert labels == ["lesion"]
        Select(browser.find_element("id", "mode-select")).select_by_value("image")
        browser.find_element("id", "file-input").send_keys(str(tmp_path / "blobs.png"))
        browser.find_element("id", "predict-button").click()
        wait_for(browser, "done")
        assert "0 annotations" in browser.find_element("id", "status").text
        before = canvas_pixels(browser)

        click(14, 14)  # inside blob A
        grown = canvas_pixels(browser)
        assert "1 annotation" in browser.find_element("id", "status").text
        # The overlay covers blob A, away from the click's own marker, and nothing else.
        assert region(tinted(grown), (9, 12), (9, 20)).mean() > 0.9
        assert region(tinted(grown), (17, 20), (9, 20)).mean() > 0.9
        assert not region(tinted(grown), (28, 41), (26, 43)).any()
        assert not region(tinted(grown), (22, 48), (0, 25)).any()

        click(11, 17, negative=True)  # a shift-click on blob A removes what it touches
        removed = canvas_pixels(browser)
        assert not tinted(removed).any()
        assert "0 annotations" in browser.find_element("id", "status").text

        page = browser.current_window_handle
        browser.execute_script("window.open(document.getElementById('prompts-link').href)")
        (opened,) = set(browser.window_handles) - {page}
        browser.switch_to.window(opened)
        sent = json.loads(browser.find_element("tag name", "body").text)
        browser.close()
        browser.switch_to.window(page)
        assert sent == {
            "space": "index",
            "labels": {
                "lesion": {
                    "points": [
                        {"at": [14, 14], "positive": True},
                        {"at": [11, 17], "positive": False},
                    ]
                }
            },
        }

        browser.find_element("id", "undo-button").click()  # the negative click undone
        wait_for(browser, "done")
        assert region(tinted(canvas_pixels(browser)), (9, 12), (9, 20)).mean() > 0.9
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_in_chromium_a_dragged_box_grows_inside_it_and_a_negative_scribble_removes_it(
    interactive_server, tmp_path
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    picture = np.full((48, 48), 30, dtype=np.uint8)
    picture[8:21, 8:21] = 200
    picture[28:41, 26:43] = 200
    Image.fromarray(picture).save(tmp_path / "blobs.png")
    browser, profile = chromium_driver()

    def offset(row, column):
        size = browser.find_element("id", "view-canvas").size
        return (
            int((column + 0.5) / 48 * size["width"] - size["width"] / 2),
            int((row + 0.5) / 48 * size["height"] - size["height"] / 2),
        )

    def drag(start, end):
        canvas = browser.find_element("id", "view-canvas")
        actions = ActionChains(browser).move_to_element_with_offset(canvas, *offset(*start))
        actions.click_and_hold()
        for step in range(1, 5):
            row = start[0] + (end[0] - start[0]) * step / 4
            column = start[1] + (end[1] - start[1]) * step / 4
            actions.move_to_element_with_offset(canvas, *offset(row, column))
        actions.release().perform()
        wait_for(browser, "done")

    def mask_shown():
        shown = canvas_pixels(browser)
        changed = np.abs(shown.astype(int) - before.astype(int)).sum(axis=2) > 90
        tinted = changed & (shown[..., 0].astype(int) > shown[..., 1].astype(int) + 40)
        scale = shown.shape[0] // 48
        # One value per picture pixel: the middle of its cell on the screen.
        return tinted[scale // 2 :: scale, scale // 2 :: scale][:48, :48]

    try:
        browser.get(interactive_server.url + "/")
        wait_for(browser, "ready")
        Select(browser.find_element("id", "mode-select")).select_by_value("image")
        browser.find_element("id", "file-input").send_keys(str(tmp_path / "blobs.png"))
        browser.find_element("id", "predict-button").click()
        wait_for(browser, "done")
        before = canvas_pixels(browser)

        browser.find_element("css selector", "input[name=prompt-tool][value=box]").click()
        drag((30, 28), (36, 38))
        shown = mask_shown()
        inside = np.zeros((48, 48), dtype=bool)
        inside[30:37, 28:39] = True
        assert shown[31:36, 29:38].all()  # blob B within the box (its edge: the box drawn)
        assert not shown[~inside].any()  # ... and nothing outside it

        browser.find_element("css selector", "input[name=prompt-tool][value=scribble]").click()
        browser.find_element("id", "negative-input").click()
        drag((33, 27), (33, 41))
        assert not mask_shown().any()

        sent = browser.execute_script(
            "return JSON.stringify(promptsJson())"  # what the last request carried
        )
        lesion = json.loads(sent)["labels"]["lesion"]
        assert lesion["boxes"] == [{"start": [30, 28], "end": [36, 38]}]
        (scribble,) = lesion["scribbles"]
        assert scribble["positive"] is False and sum(scribble["counts"]) == 48 * 48
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
