"""Research in the patient's web app (issue 13, issue 15), in Chromium, against real node processes.

A clinic and a research institute run as two node processes. The institute registers a study
(`medledger research register`) and asks it one query before the patient joins. In the page the
patient sees the study with what it may ask, its privacy budget and its threshold, and joins it
(a `health.join_study` signed in the page, which the Python SDK then sees); the institute asks a
second query, which the clinic's node answers on its own; a new page shows that query as one
that covered the patient, answered by the clinic, verified, and the first as one that did not.
The patient leaves in the page; a third query does not cover them. Screenshots at 1280 and 360 px.

A lying node (`lying_proxy.LyingProxy` in front of the clinic) serves an audit trail without the
patient's opt-in: the page shows the study from the verified chain, refuses the trail's account,
names the node, and signs nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from health_harness import DEADLINE_S, HealthNet, make_patient_key, patient_cli, start_health_net
from lying_proxy import LyingProxy
from playwright.sync_api import Browser, Page, expect
from test_research_story import CODE, born, bundle, research_cli
from test_web_app_screens import UI_TIMEOUT_MS, browser, open_key, shoot

from medledger.health.types import compute_patient_id

__all__ = ["browser"]  # the fixture, shared with the screens' test

TITLE = "Diabetes by age: a federated cohort"


def ask(net: HealthNet, tmp_path: Path, study_id: str, epsilon: str) -> str:
    """The institute asks the study's histogram; the clinic's node answers it on its own."""
    institute = net["research"]
    query_id = research_cli(
        institute.home,
        *("query", study_id, "--template", "by-age", "--code", CODE, "--grouping", "age_band"),
        *("--epsilon", epsilon),
    ).strip()
    text = research_cli(institute.home, "result", query_id, "--wait", str(DEADLINE_S))
    assert "pending" not in text, text
    net.sync()
    return query_id


def research_screen(browser: Browser, url: str, key_file: Path, problems: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    open_key(page, url, key_file)
    expect(page.locator("#app-status")).to_have_text(
        re.compile("verified against the ledger"), timeout=UI_TIMEOUT_MS
    )
    page.click("#tab-research")
    return page


def test_the_patient_joins_and_leaves_a_study_and_sees_the_queries_that_covered_them(
    browser: Browser, tmp_path: Path
) -> None:
    with start_health_net(tmp_path / "net", {"clinic": "clinic", "research": "research"}) as net:
        run_story(net, browser, tmp_path)


def run_story(net: HealthNet, browser: Browser, tmp_path: Path) -> None:
    clinic, institute = net["clinic"], net["research"]
    templates = [
        {
            "name": "by-age",
            "kind": "histogram",
            "codes": [CODE],
            "groupings": ["age_band"],
            "value_min_milli": 0,
            "value_max_milli": 0,
            "epsilon_max_micro": 1_000_000,
        }
    ]
    (tmp_path / "templates.json").write_text(json.dumps(templates), encoding="utf-8")
    study_id = research_cli(
        institute.home,
        *("register", "--title", TITLE, "--ethics-ref", "IRB-2026-0113"),
        *("--templates", str(tmp_path / "templates.json"), "--epsilon", "4", "--days", "30"),
    ).strip()
    key_file = tmp_path / "patient.key"
    identity = make_patient_key(key_file)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key_file, clinic.url, "register")
    net.sync()
    reply = clinic.post(
        "/v1/health/institution/records", {"patient_id": patient_id, "resource": bundle(born(45), "female")}
    )
    assert reply.status == 201, reply
    before = ask(net, tmp_path, study_id, "0.5")

    problems: list[str] = []
    page = research_screen(browser, clinic.url, key_file, problems)
    card = page.locator(f'#research li.study[data-study-id="{study_id}"]')
    expect(card).to_contain_text(f"{TITLE} — by research (research), ethics approval IRB-2026-0113.")
    expect(card.locator(".study-templates li")).to_have_text([f"how many patients have {CODE}, by age band."])
    # Charged 0.5 × the one institution asked; the network's k.
    privacy = card.locator(".study-privacy")
    expect(privacy).to_contain_text("Groups of fewer than 11 patients are never released.")
    expect(privacy).to_contain_text("ε 3.5 of 4 left; 0 member(s)")
    expect(card.locator(".study-status")).to_have_text("You are not a member.")
    expect(card.locator(".study-queries-none")).to_have_text("None.")
    expect(card.locator(".study-queries-other")).to_contain_text(
        "1 other query was recorded while you were not a member"
    )
    expect(card.locator(".verified")).to_have_count(1)

    # Joined in the page: a join signed here, which the Python SDK sees on the chain.
    card.locator("button.join-study").click()
    expect(page.locator("#app-status")).to_have_text(
        re.compile(f"Joining the study “{re.escape(TITLE)}”: done, and verified"), timeout=UI_TIMEOUT_MS
    )
    expect(card.locator(".study-status")).to_contain_text("You are a member since")
    expect(card.locator(".study-privacy")).to_contain_text("1 member(s)")
    net.sync()
    (listed,) = json.loads(patient_cli(key_file, institute.url, "studies", "--json"))
    assert (listed["study_id"], listed["member"]) == (study_id, True)
    page.click("#tab-history")
    expect(page.locator("#history li.event-study_joined")).to_contain_text("You joined a research study.")
    page.close()

    during = ask(net, tmp_path, study_id, "1")
    page = research_screen(browser, clinic.url, key_file, problems)
    card = page.locator(f'#research li.study[data-study-id="{study_id}"]')
    covered = card.locator("li.study-query")
    expect(covered).to_have_count(1)
    expect(covered).to_have_attribute("data-query-id", during)
    expect(covered).to_contain_text(f"how many patients have {CODE}, by age band.")
    expect(covered.locator(".query-facts")).to_contain_text("of clinic (clinic), over the ledger as of block")
    expect(covered.locator(".query-facts")).to_contain_text("each answer spends ε 1.")
    expect(covered.locator(".query-facts .verified")).to_have_count(1)
    expect(covered.locator(".query-answers")).to_have_text(
        "Answered by clinic (clinic) (1 of 1), each with noise added where your records are; "
        "no answer names anyone."
    )
    expect(card.locator(".study-queries-other")).to_contain_text("1 other query")
    expect(card.locator(f'li.study-query[data-query-id="{before}"]')).to_have_count(0)
    expect(card.locator(".study-privacy")).to_contain_text("ε 2.5 of 4 left")
    expect(page.locator("#research .refused")).to_have_count(0)
    shoot(page, "research")

    # Left in the page: the next query does not cover the patient.
    card.locator("button.leave-study").click()
    expect(page.locator("#app-status")).to_have_text(
        re.compile(f"Leaving the study “{re.escape(TITLE)}”: done, and verified"), timeout=UI_TIMEOUT_MS
    )
    expect(card.locator(".study-status")).to_contain_text("You left")
    expect(card.locator("button.join-study")).to_have_count(1)
    page.close()
    net.sync()
    (listed,) = json.loads(patient_cli(key_file, institute.url, "studies", "--json"))
    assert listed["member"] is False
    after = ask(net, tmp_path, study_id, "0.25")
    page = research_screen(browser, clinic.url, key_file, problems)
    card = page.locator(f'#research li.study[data-study-id="{study_id}"]')
    expect(card.locator("li.study-query")).to_have_count(1)
    expect(card.locator(f'li.study-query[data-query-id="{after}"]')).to_have_count(0)
    expect(card.locator(".study-queries-other")).to_contain_text(
        "2 other queries were recorded while you were not a member"
    )
    page.close()
    assert problems == []

    # A node whose audit trail hides the opt-in: the page believes the chain, and says so.
    with LyingProxy(clinic.url) as proxy:
        proxy.rewrite = _hide_study_events(patient_id)
        proxy.refuse_prefixes = ("/v1/events/stream",)
        page = research_screen(browser, proxy.url, key_file, [])
        refused = page.locator("#research .refused")
        expect(refused).to_contain_text(f"the node at {proxy.url}", timeout=UI_TIMEOUT_MS)
        expect(refused).to_contain_text("the ledger holds your study opt-in (block")
        expect(refused).to_contain_text("and the node's audit trail does not show it")
        expect(refused).to_contain_text("the ledger holds your study withdrawal (block")
        card = page.locator(f'#research li.study[data-study-id="{study_id}"]')
        expect(card.locator("li.study-query")).to_have_attribute("data-query-id", during)
        page.close()
        assert proxy.posts == []  # nothing was signed and sent


def _hide_study_events(patient_id: str) -> Any:
    def rewrite(path: str, body: Any) -> Any:
        if path == f"/v1/health/patients/{patient_id}/audit" and body.get("events"):
            body["events"] = [e for e in body["events"] if not e.get("event", "").startswith("study_")]
        return body

    return rewrite
