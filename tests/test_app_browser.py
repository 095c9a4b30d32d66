"""``stk-vqa app`` in a real browser: headless Chromium (Debian's ``chromium``, driven by ``playwright`` from PyPI,
which downloads no browser of its own) on the app as a user gets it after ``make quickstart``: no arguments, the
bundled sample, the quickstart's tiny model + adapter + report.

Run with ``make test-browser`` (needs ``pip install -e '.[app]'`` and ``apt-get install chromium``). Writes the
README's screenshot to ``docs/images/app.png`` (``STK_VQA_APP_SCREENSHOT=path`` to write it elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = Path(os.environ.get("STK_VQA_APP_SCREENSHOT") or REPO_ROOT / "docs" / "images" / "app.png")
CHROMIUM = os.environ.get("STK_VQA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 60_000


def _requirements():
    missing = []
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (pip install -e '.[app]')")
    if not CHROMIUM:
        missing.append("a chromium executable (apt-get install chromium, or STK_VQA_CHROMIUM=path)")
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):  # CI installs them: a missing one must fail, not skip
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def quickstart_project(tmp_path_factory) -> Path:
    """A folder as after ``make quickstart`` (its recipe as written, 40 evaluated questions; ~15 s)."""
    _requirements()
    from stk_vqa.quickstart import QuickstartConfig, quickstart

    project = tmp_path_factory.mktemp("project")
    quickstart(QuickstartConfig(work_dir=str(project / "outputs" / "quickstart"), max_eval_samples=40))
    return project


@pytest.fixture(scope="module")
def app_url(quickstart_project):
    """``stk-vqa app`` with no arguments, started in the quickstart's folder, served on a free local port."""
    from stk_vqa.app.logic import resolve_config
    from stk_vqa.app.ui import build_app, launch

    cwd = os.getcwd()
    os.chdir(quickstart_project)
    try:
        config = resolve_config()
        demo = build_app(config, device="cpu")
        _, url, _ = launch(demo, "127.0.0.1", None, prevent_thread_lock=True)
        yield url, config
    finally:
        os.chdir(cwd)
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_url[0])
        page.wait_for_selector("#view-image img")
        yield page
        browser.close()


def _choose(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def _ask(page, question_label: str):
    _choose(page, "a question of this view (any family), or type your own below", question_label)
    page.locator("#ask-button").click()


def test_browse_a_frame_and_ask_base_and_adapter(page, app_url, quickstart_project):
    from playwright.sync_api import expect

    url, config = app_url
    assert config.model.endswith("tiny-smolvlm") and config.adapters[0].startswith("smoke_adapter=")

    # Frames: pick a frame and a view of the bundled sample's validation split
    _choose(page, "frame · track", "00002 · hacienda")
    expect(page.locator("#scene-facts")).to_contain_text("valid/00002 view 0")
    page.locator("#view-radio").get_by_text("4", exact=True).click()
    facts = page.locator("#scene-facts")
    expect(facts).to_contain_text("valid/00002 view 4")
    expect(facts).to_contain_text("hacienda")
    expect(facts).to_contain_text("EGO")

    # Questions: the view's QA pairs by family
    page.get_by_role("tab", name="Questions").click()
    expect(page.locator("#qa-table")).to_contain_text("How many karts are there in the scenario?")

    # Ask: a generated question, answered by the base and the adapter side by side, with the reference
    page.get_by_role("tab", name="Ask").click()
    _ask(page, "[kart_count] How many karts are there in the scenario?")
    answers = page.locator("#answers")
    expect(answers).to_contain_text("reference answer")
    expect(answers.locator("table")).to_contain_text("base")
    expect(answers.locator("table")).to_contain_text("smoke_adapter")
    rows = answers.locator("tbody tr")
    expect(rows).to_have_count(2)
    assert rows.nth(1).locator("td").nth(1).inner_text().strip().isdigit()  # the adapter learned to answer a count

    # run the family: every generated question of the view, scored
    _choose(page, "family", "directional_count")
    page.locator("#run-family").click()
    expect(page.locator("#family-run")).to_contain_text("4 question(s), family directional_count")
    expect(page.locator("#family-run")).to_contain_text("smoke_adapter")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000


def test_bad_input_shows_a_message_and_the_app_keeps_serving(page, app_url, quickstart_project, tmp_path):
    from playwright.sync_api import expect

    status = page.locator("#view-status")
    page.get_by_text("Upload an image and/or its info.json").click()
    broken = tmp_path / "00000_info.json"
    broken.write_text('{"track": "lighthouse", "karts": [')
    page.locator("#upload-info input[type=file]").set_input_files(str(broken))
    page.locator("#upload-button").click()
    expect(status).to_contain_text("00000_info.json: field '<json>': malformed JSON")

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.locator("#upload-image input[type=file]").set_input_files(str(notes))
    page.locator("#upload-button").click()
    expect(status).to_contain_text("'notes.txt' is not an image")

    # an adapter trained on another base model: a message, and the others still answer
    other = tmp_path / "other-base-lora"
    shutil.copytree(quickstart_project / "outputs" / "quickstart" / "adapter", other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolVLM-256M-Instruct"
    (other / "adapter_config.json").write_text(json.dumps(config))
    page.get_by_role("tab", name="Ask").click()
    page.get_by_text("Models", exact=True).click()
    adapters = app_url[1].adapters[0] + f"\nother={other}"
    page.locator("#adapters-box textarea").fill(adapters)
    page.locator("#load-models").click()
    expect(page.locator("#models-state")).to_contain_text(
        "was trained on base model 'HuggingFaceTB/SmolVLM-256M-Instruct'"
    )

    page.locator("#question textarea").fill("What track is this?")
    page.locator("#ask-button").click()
    expect(page.locator("#answers")).to_contain_text("What track is this?")
    expect(page.locator("#answers tbody tr")).to_have_count(2)  # base + smoke_adapter; 'other' left out
    expect(page.locator("#answers")).to_contain_text("adapter left out")

    # Report: the quickstart's evaluation folder
    page.get_by_role("tab", name="Report").click()
    expect(page.locator("#report-table")).to_contain_text("overall")
    expect(page.locator("#report-table")).to_contain_text("smoke_adapter")
    assert "Traceback" not in page.content()
