"""Take the reading-station screenshots of docs/reading.md with headless Chromium.

    .venv/bin/python docs/images/make_review_screenshots.py

The worklist also lists a DICOM node spool (``--node-spool``) built with the node's own
code. Writes docs/images/review-worklist.png, review-study.png and review-signed-pdf-1.png
(first page of a signed PDF, by pdftoppm). Needs chromium, chromium-driver, poppler-utils.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from review_fixture import make_node_spool, make_study_folder  # noqa: E402


def main() -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp())
    studies = tmp / "studies"
    make_study_folder(studies / "patient-a")
    for stem in ("phantom_b_nonsquare", "phantom_c_monochrome1", "phantom_d_mixed_hurst"):
        for suffix in (".dcm", ".roi.json"):
            shutil.copy(ROOT / "sample_dicom" / f"{stem}{suffix}", studies / f"{stem}{suffix}")
    make_node_spool(tmp / "spool", tmp)  # what a DICOM node received: scored, set aside
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tbscore",
            "review",
            str(studies),
            "--node-spool",
            str(tmp / "spool"),
            "--db",
            str(tmp / "r.sqlite"),
            "--port",
            str(port),
            "--physician",
            "Dr Jane Roe",
            "--organisation",
            "General Hospital",
            "--lsc",
            "0.02",
            "--tz",
            "Europe/Zurich",
            "--quiet-requests",
        ]
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1480,1000",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        wait = WebDriverWait(drv, 30, ignored_exceptions=(StaleElementReferenceException,))
        ready = "return window.tbsEditor && tbsEditor.ready()"
        drv.get(url + "/")
        links = {
            a.text: a.get_attribute("href")
            for a in drv.find_elements(By.CSS_SELECTOR, "#worklist a.open")
        }
        drv.get(links["prior.dcm"])  # sign the prior: a 'signed' row
        wait.until(lambda d: d.execute_script(ready))
        drv.find_element(By.ID, "impression").send_keys("Baseline study.")
        drv.find_element(By.ID, "sign").click()
        wait.until(lambda d: d.find_elements(By.ID, "signed-block"))
        drv.find_element(By.ID, "addendum").send_keys("Compared with the follow-up study.")
        drv.find_element(By.ID, "add-addendum").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "ol.signatures li")) == 2)
        drv.get(links["current.dcm"])
        wait.until(lambda d: d.execute_script(ready))
        drv.find_element(By.ID, "reason-L3").send_keys("fracture")
        drv.find_element(By.ID, "exclude-L3").click()
        wait.until(lambda d: "excluded" in d.find_element(By.ID, "row-L3").text)
        wait.until(lambda d: d.execute_script(ready))
        drv.find_element(By.ID, "impression").send_keys(
            "TBS within the expected range for this phantom; L3 excluded (fracture)."
        )
        time.sleep(0.5)
        drv.set_window_size(1480, 1420)
        drv.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        time.sleep(0.3)
        drv.save_screenshot(str(HERE / "review-study.png"))
        drv.set_window_size(1480, 1000)
        drv.find_element(By.ID, "sign").click()
        wait.until(lambda d: d.find_elements(By.ID, "signed-block"))
        drv.get(url + "/")
        drv.set_window_size(1480, 700)
        drv.save_screenshot(str(HERE / "review-worklist.png"))
        pdfs = sorted((tmp / "r-signed").glob("*/report-1.pdf"), key=lambda p: p.stat().st_mtime)
        pdf = pdfs[-1]
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                "70",
                "-f",
                "1",
                "-l",
                "2",
                str(pdf),
                str(HERE / "review-signed-pdf"),
            ],
            check=True,
        )
    finally:
        drv.quit()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
