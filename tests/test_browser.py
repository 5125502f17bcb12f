"""The web app in a real headless Chromium: upload a real DICOM file, see concepts and a caption.

Drives Debian's chromium through Playwright (never ``playwright install``: the system browser
is used). Skipped, saying how to install it, when no chromium is found.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from conftest import train_tiny_models

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DICOM_FILE = "MR2_UNCR.dcm"  # pydicom-data: a real MR slice (2 MB)


def _chromium() -> str | None:
    for candidate in (os.environ.get("MEDCAP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium found: install it with `apt-get install chromium` (Debian/Ubuntu, as root) "
                    "or `make browser`, or point MEDCAP_CHROMIUM at a Chrome/Chromium executable")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, synth_small):
    from medcap.webapp.server import serve

    models = train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")
    port = _free_port()
    demo = serve(models.concepts, models.captions, port=port, max_file_mb=20, block=False)
    assert demo.server_name == "127.0.0.1"  # never on the network unless --host says so
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("MEDCAP_SCREENSHOT_DIR"):
        target = Path(os.environ["MEDCAP_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def test_uploading_a_dicom_file_shows_concepts_caption_and_heatmap(browser, app_url, tmp_path):
    from pydicom.data import get_testdata_file

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(app_url)
    page.set_input_files("#upload input[type=file]", get_testdata_file(DICOM_FILE))
    page.get_by_text(f"Analysed {DICOM_FILE}").wait_for(timeout=90_000)
    page.wait_for_function("document.querySelector('#caption textarea').value.length > 0", timeout=30_000)
    # Concepts: gr.Label rows "name (CUI)" with their probability.
    concepts = page.locator("#concepts").inner_text()
    assert "(C" in concepts and "%" in concepts
    assert page.locator("#caption textarea").input_value().strip()
    assert page.locator("#preview img").count() == 1 and page.locator("#heatmap img").count() == 1
    shot = _screenshot(page, tmp_path, "medcap-app-dicom.png")
    assert shot.stat().st_size > 10_000
    page.close()


def test_uploading_a_non_image_shows_a_clear_message(browser, app_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(app_url)
    page.set_input_files("#upload input[type=file]", str(notes))
    page.get_by_text("Cannot analyse this file").wait_for(timeout=60_000)
    status = page.locator("#status").inner_text()
    assert "notes.txt" in status and "image" in status
    _screenshot(page, tmp_path, "medcap-app-not-an-image.png")
    page.close()


def test_an_oversized_upload_is_refused_with_a_clear_message(browser, tmp_path):
    from pydicom.data import get_testdata_file

    from medcap.webapp.server import serve

    port = _free_port()
    demo = serve(None, None, port=port, max_file_mb=0.5, block=False)  # no models needed to refuse a file
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 700})
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#upload input[type=file]", get_testdata_file(DICOM_FILE))  # 2 MB
        page.get_by_text("exceed the maximum allowed size").wait_for(timeout=30_000)
        assert "MR2_UNCR.dcm" in page.locator("body").inner_text()
        _screenshot(page, tmp_path, "medcap-app-too-large.png")
        page.close()
    finally:
        demo.close()
