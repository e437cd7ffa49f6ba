#!/usr/bin/env python3
"""The web console in a real browser (Debian's headless Chromium driven by Selenium) against
`reid up` playing vtest.avi as a camera, with an API key: log in, watch identities and live
events appear, search by uploading a photo, enroll, rename, confirm a sighting, merge two
identities and forget one (with its confirmation), a form without its CSRF token refused; every effect is checked through the
identity service's gRPC API (a grpcio client generated from proto/), not through the page.
Usage: console_browser.py PATH_TO_REID_BINARY
"""
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/python"))
import serving  # noqa: E402
from grpc_client import generate  # noqa: E402

KEY = "console-browser-key"
VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def four_free_ports() -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 65530:
            continue
        held = []
        try:
            for p in range(base, base + 4):
                t = socket.socket()
                t.bind(("127.0.0.1", p))
                held.append(t)
            return base
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
    sys.exit("no four consecutive free ports")


def up(binary: str, data: Path, port: int) -> tuple[subprocess.Popen, str, list[str]]:
    args = [binary, "up", "--data", str(data), "--port", str(port), "--console-port", "0",
            "--model-dir", str(ROOT / "models"), "--camera", f"west={VIDEO}"]
    env = {"RUST_LOG": "warn", "PATH": "/usr/bin:/bin", "REID_API_KEY": KEY}
    return serving.start(args, r"console (http://\S+?);", env, timeout=180)


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"]:
        options.add_argument(a)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main() -> None:
    binary = sys.argv[1]
    results: dict[str, bool] = {}

    def check(name: str, ok: bool) -> None:
        results[name] = bool(ok)
        print(f"console in a browser: {name}: {'ok' if ok else 'FAILED'}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gen").mkdir()
        generate(Path(tmp) / "gen")
        from reid.v1 import identity_pb2, identity_pb2_grpc

        port = four_free_ports()
        proc, console, log = up(binary, Path(tmp) / "data", port)
        channel = grpc.insecure_channel(f"127.0.0.1:{port + 1}")
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        auth = [("authorization", f"Bearer {KEY}")]

        def identities() -> dict[str, identity_pb2.IdentitySummary]:
            reply = identity.ListIdentities(identity_pb2.ListIdentitiesRequest(page_size=500), metadata=auth)
            return {i.identity_id: i for i in reply.identities}

        d = browser()
        # A page replaced while a wait reads it is read again.
        wait = WebDriverWait(d, 60, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException))
        try:
            # Log in: a wrong key is refused, the right one opens the overview.
            d.get(console + "/")
            check("an unauthenticated visit is sent to the login", d.current_url.endswith("/login"))
            d.find_element(By.ID, "key").send_keys("not-the-key")
            d.find_element(By.ID, "login").click()
            wait.until(lambda d: d.find_elements(By.ID, "login-error"))
            check("a wrong key is refused", d.find_element(By.ID, "key").get_attribute("value") == "")
            d.find_element(By.ID, "key").send_keys(KEY)
            d.find_element(By.ID, "login").click()
            wait.until(lambda d: d.find_elements(By.ID, "identities"))
            check("no page carries the key", KEY not in d.page_source)
            cookie = d.get_cookie("reid_console") or {}
            check("the session cookie is HttpOnly and SameSite=Strict",
                  cookie.get("httpOnly") is True and cookie.get("sameSite") == "Strict")

            # Identities and live events appear while the camera plays, without a reload.
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#identities tr.identity")) >= 3)
            check("identities appear on the overview", True)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events li.event"))
            check("live events appear", "seen on west" in d.find_element(By.ID, "events").text
                  or "new person" in d.find_element(By.ID, "events").text)
            d.refresh()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cameras tr.camera"))
            check("the camera is listed with its state",
                  d.find_element(By.CSS_SELECTOR, "#cameras tr.camera").get_attribute("data-id") == "west")

            # Search by photo: a crop the service stored of one identity finds that identity.
            crops = Path(tmp) / "data/identity/crops"
            wait.until(lambda _: any(crops.glob("*/sighting-*.jpg")))
            photo = sorted(crops.glob("*/sighting-*.jpg"))[0]
            owner = photo.parent.name
            d.find_element(By.ID, "search-photo").send_keys(str(photo))
            d.find_element(By.ID, "search").click()
            wait.until(lambda d: d.find_elements(By.ID, "decision"))
            # The service decides KNOWN only with a margin over the runner-up; the best candidate
            # listed is the person either way.
            ranked = [c.get_attribute("data-id") for c in d.find_elements(By.CSS_SELECTOR, "#candidates tr.candidate")]
            check("search by photo ranks the person it shows first", ranked[:1] == [owner])
            check("search by photo shows the service's decision",
                  d.find_element(By.ID, "decision").text.split(":")[0] in ("Known", "Unknown"))

            # Enroll a person from the same photo: a new enrolled identity with the name given.
            d.get(console + "/")
            d.find_element(By.ID, "enroll-name").send_keys("Visitor")
            d.find_element(By.ID, "enroll-photos").send_keys(str(photo))
            d.find_element(By.ID, "enroll").click()
            wait.until(lambda d: d.find_element(By.ID, "identity-name").text == "Visitor")
            visitor = d.find_element(By.ID, "identity-name").get_attribute("data-id")
            check("enroll reaches the service", identities()[visitor].enrolled and identities()[visitor].name == "Visitor")

            # Rename, then merge a second identity into the first, on the first's page.
            people = sorted(identities().values(), key=lambda i: -i.sightings)
            keep, gone = people[0].identity_id, people[1].identity_id
            before = people[0].sightings + people[1].sightings
            d.get(f"{console}/identities/{keep}")
            field = d.find_element(By.ID, "rename-name")
            field.clear()
            field.send_keys("Walker")
            d.find_element(By.ID, "rename").click()
            wait.until(lambda d: d.find_element(By.ID, "identity-name").text == "Walker")
            check("rename reaches the service", identities()[keep].name == "Walker")
            # Confirm one of its sightings: a "same" pair of the identity and that track.
            sighting = d.find_element(By.CSS_SELECTOR, "figure.sighting")
            camera, track = sighting.get_attribute("data-camera"), sighting.get_attribute("data-track")
            sighting.find_element(By.CSS_SELECTOR, "button[value=confirm]").click()

            def confirmed() -> bool:
                pairs = identity.ListFeedback(identity_pb2.ListFeedbackRequest(), metadata=auth).pairs
                return any(p.same and p.identity_a == keep and (p.camera_id, p.track_id) == (camera, track) for p in pairs)

            WebDriverWait(d, 10).until(lambda _: confirmed())
            check("confirming a sighting records the pair", confirmed())
            wait.until(expected_conditions.staleness_of(sighting))  # the page after the form
            Select(d.find_element(By.ID, "merge-other")).select_by_value(gone)
            d.find_element(By.ID, "merge").click()
            WebDriverWait(d, 10).until(lambda d: d.switch_to.alert).accept()
            wait.until(lambda d: gone not in identities())
            now = identities()
            check("merge reaches the service", gone not in now and now[keep].sightings >= before)

            # A form posted without its CSRF token is refused and changes nothing.
            status = d.execute_script(
                "return fetch(arguments[0], {method: 'POST', credentials: 'same-origin',"
                " headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'confirm=yes'})"
                ".then(r => r.status);", f"/identities/{keep}/forget")
            check("a form without its CSRF token is refused", status == 403 and keep in identities())

            # Forget asks first, then erases everything.
            d.find_element(By.ID, "forget-confirm").click()
            d.find_element(By.ID, "forget").click()
            WebDriverWait(d, 10).until(lambda d: d.switch_to.alert).accept()
            wait.until(lambda d: d.find_elements(By.ID, "identities"))
            try:
                identity.Sightings(identity_pb2.SightingsRequest(identity_id=keep), metadata=auth)
                erased = False
            except grpc.RpcError as e:
                erased = e.code() == grpc.StatusCode.NOT_FOUND
            check("forget reaches the service", keep not in identities() and erased)
            d.save_screenshot(str(ROOT / ".cache/console.png"))
            d.find_element(By.ID, "logout").click()
            wait.until(lambda d: d.find_elements(By.ID, "login-form"))
            d.get(console + "/")
            check("logging out ends the session", d.current_url.endswith("/login"))
        except Exception as e:  # a step that timed out or broke: say which, with the service's log
            check(f"the walk-through ({type(e).__name__}: {e})", False)
            print("".join(log[-20:]), file=sys.stderr)
        finally:
            d.quit()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
        check("reid up exits cleanly", code == 0)

    passed = sum(results.values())
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
