"""`lantern report` on a real run directory (real records of the tiny Gemma 3's cached SAE, real logit-lens and
steering evidence, detection / fuzzing / intruder scores from a scripted judge, intervention scores from the real
scorer answered by the tiny model in-process), opened in headless Chromium from Debian's packages through
selenium: the index loads without console errors, sorting and filtering change the rows, a latent page shows
shaded tokens, and a 10,000-latent table loads and sorts within a time bound."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lantern.cache.reader import LatentCache
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.explain.output_evidence import output_evidence
from lantern.io import write_json, write_parquet
from lantern.llm.base import Response
from lantern.llm.transformers_client import TransformersClient
from lantern.models.loading import SubjectModel
from lantern.pipeline.files import EXAMPLES, EXPLANATIONS, SCORES, records_file
from lantern.pipeline.score_stage import run_score, score_latents
from lantern.records.build import RecordConfig, build_records
from lantern.report import build_report
from lantern.report.build import INDEX_DATA, INDEX_GLOBAL, page_path
from lantern.score.base import LatentTask, ScoreContext
from lantern.score.intervention import InterventionScorer
from lantern.score.settings import ScorerConfig
from scorer_runs import ScriptedLLM

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RECORDS = RecordConfig(ctx_len=12, tokens_before=6, n_explain=8, n_test_per_decile=1, n_validation_per_decile=1,
                       n_negatives=4, n_similar_negatives=0, n_neighbour_negatives=2, min_windows=20)
TARGET_KLS = (0.004, 0.012)  # the random tiny model saturates near 0.024 nats


def judge(request) -> Response:
    """A scripted judge whose answers vary with the prompt (so verdicts are both right and wrong): P(yes) for
    detection / fuzzing, a passage number for intruder trials."""
    h = zlib.crc32(request.prompt.encode())
    if request.prompt.rstrip().endswith("passage ["):
        odd = h % 5 + 1
        return Response(text=str(odd), prompt_tokens=50, completion_tokens=1,
                        first_token_logprobs={str(n): math.log(0.8 if n == odd else 0.05) for n in range(1, 6)})
    p = 0.05 + 0.9 * (h % 1000) / 1000
    return Response(text=" yes" if p > 0.5 else " no", prompt_tokens=40, completion_tokens=1,
                    first_token_logprobs={" yes": math.log(p), " no": math.log(1 - p)})


def _append(path: Path, rows: list[dict]) -> None:
    """Add rows (with their own columns) to a Parquet table the way the score stage unifies columns."""
    old = pq.read_table(path).to_pylist()
    columns = list(dict.fromkeys(k for r in old + rows for k in r))
    write_parquet(path, [{k: r.get(k) for k in columns} for r in old + rows])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, built_cache, tokenizer, bos, tiny_model, model_dir) -> Path:
    """A scored run of 4 SAE latents (2 candidate explanations each, chosen on validation windows)."""
    cache_dir, coders, _ = built_cache
    path = tmp_path_factory.mktemp("report") / "run"
    cfg = RunConfig(run_dir=str(path), model=str(model_dir), records=RECORDS,
                    scorers=["detection", "fuzzing", "intruder"], latents=4,
                    scoring=ScorerConfig(bootstrap_resamples=100))
    cfg.save()
    table, summary = build_records(LatentCache(cache_dir, "sae"), RECORDS, n_latents=4)
    write_parquet(records_file(path, "sae"), table)
    write_parquet(path / "records" / "sae.latents.parquet", summary)
    # the run's cache of the SAE (the intruder checks its intruders there): its folder and the shared token files
    shutil.copytree(cache_dir, path / "cache",
                    ignore=lambda folder, names: [n for n in names if Path(folder) == cache_dir and
                                                  (cache_dir / n).is_dir() and n != "sae"])
    latents = sorted({r["latent"] for r in summary if r["has_record"]})
    maxima = {r["latent"]: r["max"] for r in summary}
    evidence = output_evidence(tiny_model, tokenizer, coders[0], {latent: maxima[latent] for latent in latents}, 8)
    write_parquet(path / EXPLANATIONS, [
        {"coder": "sae", "latent": latent, "explainer": "ensemble", "candidate": k, "explanation": text,
         "failed": False, "error": None, "raw_answer": f" {text}\n", "prompt": f"Explain latent {latent}:",
         "prompt_tokens": 120, "completion_tokens": 6, "llm": "scripted:judge",
         "evidence": json.dumps({"windows": 8, **evidence[latent].to_dict()})}
        for latent in latents for k, text in enumerate([f"the word said (latent {latent})",
                                                        f"<verbs> of speech & names {latent}"])])
    run_score(cfg, ScriptedLLM(judge), tokenizer)
    # the intervention scorer itself, on two latents, answered by the tiny model in-process
    chosen = {(r["coder"], r["latent"]): r["explanation"]
              for r in pq.read_table(path / "selection.parquet").to_pylist() if r["chosen"]}
    settings = ScorerConfig(bootstrap_resamples=100, intervention_targets=TARGET_KLS, intervention_prompts=2,
                            intervention_tokens=4)
    client = TransformersClient(tiny_model, tokenizer, "tiny", batch_size=8)
    context = ScoreContext(settings=settings, tokenizer=tokenizer, capabilities=client.capabilities,
                           backend=client.backend, records={}, subject=SubjectModel(tiny_model, tokenizer, "tiny", bos),
                           config=cfg, explanations=chosen)
    out = score_latents(client, [InterventionScorer(settings, coders={"sae": coders[0]})], context,
                        [LatentTask("sae", latent, chosen[("sae", latent)], []) for latent in latents[:2]])
    _append(path / EXAMPLES, out.examples)
    _append(path / SCORES, out.scores)
    (path / "analysis").mkdir()
    (path / "analysis" / "agreement.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><text x="4" y="24">agreement</text></svg>')
    (path / "analysis" / "agreement.csv").write_text("a,b,rho\ndetection,fuzzing,0.5\n")
    write_json(path / "analysis" / "index.json", {"analyses": [
        {"name": "agreement", "title": "Scorer agreement", "description": "Spearman correlations between scorers.",
         "files": ["agreement.svg", "agreement.csv", "missing.png"]}]})
    done = subprocess.run([sys.executable, "-m", "lantern.cli", "report", str(path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report of 4 latents (4 pages)" in done.stderr
    return path


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not look for a browser on the network
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--window-size=1400,1000", "--log-level=3"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def _open(driver, path: Path) -> list[dict]:
    """Open a report page; the console messages it logged."""
    driver.get(path.resolve().as_uri())
    return driver.get_log("browser")


def _rows(driver) -> list[list[str]]:
    """The table's cells as shown (one round trip: a page of rows is hundreds of cells)."""
    return driver.execute_script("return Array.from(document.querySelectorAll('#latent-table tbody tr'))"
                                 ".map(tr => Array.from(tr.cells).map(td => td.innerText));")


def _timed(driver, action: str) -> float:
    """Milliseconds the page spends on `action` (JavaScript; event handlers run synchronously inside it)."""
    return driver.execute_script(f"var t = performance.now(); {action}; return performance.now() - t;")


def _scores(rows, column: int) -> list[float]:
    return [float(r[column]) for r in rows]


def test_report_files(run_dir: Path):
    report = run_dir / "report"
    index = (report / "index.html").read_text()
    assert "Scorer agreement" in index and "agreement.svg" in index and "missing.png" not in index
    data = (report / INDEX_DATA).read_text()
    assert data.startswith(f"window.{INDEX_GLOBAL} = ")
    payload = json.loads(data[len(f"window.{INDEX_GLOBAL} = "):].rstrip().rstrip(";"))
    assert [s["name"] for s in payload["scorers"]] == ["detection", "fuzzing", "intruder", "intervention"]
    assert len(payload["rows"]) == 4
    selection = pq.read_table(run_dir / "selection.parquet").to_pylist()
    for row in payload["rows"]:
        chosen = [s["explanation"] for s in selection if s["latent"] == row[1] and s["chosen"]]
        assert row[2] == chosen[0]  # the index shows the explanation that was scored
    for latent in {s["latent"] for s in selection}:
        assert (report / page_path("sae", latent)).exists()


def test_index_loads_without_console_errors_and_shows_every_latent(run_dir, browser):
    logs = _open(browser, run_dir / "report" / "index.html")
    assert [m for m in logs if m["level"] in ("SEVERE", "WARNING")] == []
    assert browser.find_element("id", "status").text == "4 of 4 latents"
    rows = _rows(browser)
    assert len(rows) == 4 and all(r[0] == "sae" for r in rows)
    assert browser.find_elements("css selector", "#analysis-agreement img")


def test_sorting_and_filtering_change_the_rows(run_dir, browser):
    _open(browser, run_dir / "report" / "index.html")
    header = browser.find_element("css selector", 'th[data-sort="score:0"]')  # detection
    header.click()
    down = _scores(_rows(browser), 5)
    assert down == sorted(down, reverse=True) and len(set(down)) > 1
    header.click()
    up = _scores(_rows(browser), 5)
    assert up == sorted(up) and up == down[::-1]
    browser.find_element("css selector", 'th[data-sort="latent"]').click()
    latents = [int(r[1]) for r in _rows(browser)]
    assert latents == sorted(latents)
    search = browser.find_element("id", "f-search")
    query = _rows(browser)[0][2]  # each explanation names its latent
    search.send_keys(query)
    found = _rows(browser)
    assert latents[0] in [int(r[1]) for r in found] and len(found) < 4
    assert all(word in r[2].lower() for r in found for word in query.lower().split())
    assert browser.find_element("id", "status").text == f"{len(found)} of 4 latents"
    search.clear()
    search.send_keys("no such words")
    assert _rows(browser) == [] and browser.find_element("id", "status").text == "0 of 4 latents"
    browser.find_element("id", "f-reset").click()
    assert len(_rows(browser)) == 4
    # the intervention scorer scored two latents: choosing it keeps only those
    browser.find_element("css selector", '#f-scorer option[value="3"]').click()
    assert len(_rows(browser)) == 2
    browser.find_element("id", "f-reset").click()
    threshold = round(sorted(down)[1] - 0.0005, 4)  # shown scores are rounded to 3 decimals: stay below the cut
    browser.find_element("css selector", '#f-scorer option[value="0"]').click()
    browser.find_element("id", "f-score-min").send_keys(str(threshold))
    assert sorted(_scores(_rows(browser), 5)) == sorted(s for s in down if s >= float(threshold))


def test_latent_page_shows_shaded_tokens_verdicts_and_evidence(run_dir, browser):
    examples = pq.read_table(run_dir / EXAMPLES).to_pylist()
    latent = next(e["latent"] for e in examples if e["scorer"] == "intervention")
    logs = _open(browser, run_dir / "report" / page_path("sae", latent))
    assert [m for m in logs if m["level"] == "SEVERE"] == []
    shaded = browser.find_elements("css selector", "td.text span.t.p")
    assert shaded
    colours = {s.value_of_css_property("background-color") for s in shaded}
    assert all(c.startswith("rgba(255, 140, 0") for c in colours) and len(colours) > 1  # opacity follows activation
    headings = [h.text for h in browser.find_elements("css selector", "h2")]
    for title in ("Explain examples", "Validation examples", "Test examples", "Negatives by type",
                  "Intruder trials", "Intervention samples", "What it writes"):
        assert any(h.startswith(title) for h in headings), title
    sources = [h.text for h in browser.find_elements("css selector", "h3")]
    assert any(s.startswith("random") for s in sources) and any(s.startswith("neighbour") for s in sources)
    verdicts = browser.find_elements("css selector", "#test ~ table ul.verdicts li")
    scored = [e for e in examples if e["latent"] == latent and e["scorer"] in ("detection", "fuzzing")]
    assert len(browser.find_elements("css selector", "ul.verdicts li")) == len(scored)
    assert verdicts and {"right", "wrong"} <= {v.get_attribute("class").split()[-1]
                                               for v in browser.find_elements("css selector", "li.v")}
    assert browser.find_elements("css selector", "ol.tokens li")  # logit lens and steering tokens
    assert "chosen, scored below" in browser.page_source
    texts = [p.text for p in browser.find_elements("css selector", "p.expl")]
    assert f"<verbs> of speech & names {latent}" in texts  # shown as text, not parsed as markup
    score_rows = browser.find_elements("css selector", "table.scores tbody tr")
    assert len(score_rows) == 4 and "[" in score_rows[0].text  # every scorer, with its interval


def test_ten_thousand_latents_load_and_sort_quickly(run_dir, browser, tmp_path):
    """The index page with a synthetic 10,000-latent table (the page is under test, not the science)."""
    report = tmp_path / "report"
    shutil.copytree(run_dir / "report", report, ignore=shutil.ignore_patterns("latents"))
    shutil.copytree(run_dir / "analysis", tmp_path / "analysis")
    text = (report / INDEX_DATA).read_text()
    payload = json.loads(text[len(f"window.{INDEX_GLOBAL} = "):].rstrip().rstrip(";"))
    template = payload["rows"][0]
    words = ["said", "unto", "function", "return", "Lord", "class", "river", "number"]
    rows = []
    for i in range(10_000):
        scores = [[(i * 7919 % 1000) / 1000, 0.0, 1.0] if (i + s) % 5 else None for s in range(len(payload["scorers"]))]
        rows.append([0, i, f"{words[i % 8]} {words[i * 3 % 8]} latent {i}", (i % 997) / 997, float(i % 50),
                     template[5], scores])
    payload["rows"] = rows
    (report / INDEX_DATA).write_text(f"window.{INDEX_GLOBAL} = {json.dumps(payload)};")
    size_mb = (report / INDEX_DATA).stat().st_size / 1e6
    logs = _open(browser, report / "index.html")  # returns once the page has loaded and its scripts have run
    assert [m for m in logs if m["level"] == "SEVERE"] == []
    loaded = browser.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd;")
    assert browser.find_element("id", "status").text == "10,000 of 10,000 latents"
    assert len(_rows(browser)) == 50  # one page in the DOM, not 10,000 rows
    sort = _timed(browser, "document.querySelector('th[data-sort=\"score:0\"]').click()")
    top = _rows(browser)
    assert _scores(top, 5) == sorted(_scores(top, 5), reverse=True) and float(top[0][5]) == 0.999
    search = _timed(browser, "var el = document.getElementById('f-search'); el.value = 'river';"
                             "el.dispatchEvent(new Event('input'))")
    assert browser.find_element("id", "status").text == "2,500 of 10,000 latents"
    assert all("river" in r[2] for r in _rows(browser))
    resort = _timed(browser, "document.querySelector('th[data-sort=\"explanation\"]').click()")
    print(f"10,000 latents: data {size_mb:.1f} MB; in the page: loaded {loaded:.0f} ms after navigation, "
          f"sort by score {sort:.0f} ms, search {search:.0f} ms, sort 2,500 by text {resort:.0f} ms")
    # generous bounds for a loaded 2-core machine (a page that renders every row, or freezes, takes far longer)
    assert loaded < 10_000 and sort < 1_500 and search < 1_500 and resort < 1_500


def test_report_after_records_only_and_clear_errors(run_dir, tmp_path, tokenizer):
    early = tmp_path / "early"
    early.mkdir()
    shutil.copy(run_dir / "config.json", early)
    shutil.copytree(run_dir / "records", early / "records")
    result = build_report(early, tokenizer)
    assert result["latents"] == 4 and result["pages"] == 4
    first = json.loads((early / "report" / INDEX_DATA).read_text().split(" = ", 1)[1].rstrip().rstrip(";"))["rows"][0]
    page = (early / "report" / first[5]).read_text()
    assert "Not explained yet" in page and 'class="t p"' in page
    with pytest.raises(LanternError, match="not a lantern run directory"):
        build_report(tmp_path / "nowhere", tokenizer)
    before = (early / "report" / "index.html").read_text()
    (early / "records" / "sae.parquet").write_text("not parquet")  # read while the pages are written
    with pytest.raises(LanternError, match="sae.parquet is not a readable Parquet file"):
        build_report(early, tokenizer)
    assert (early / "report" / "index.html").read_text() == before  # the old report is kept
    assert [p.name for p in early.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


def test_vocabulary_pieces_match_the_tokenizer(run_dir, tokenizer, model_dir):
    """The report reads a local model's tokenizer.json with `tokenizers` alone (fast); its token strings are
    the ones the transformers tokenizer gives."""
    from markupsafe import escape

    from lantern.report.build import load_report_tokenizer
    from lantern.report.latent_page import PieceTable
    from lantern.text import NEWLINE_MARK, token_strings

    fast = load_report_tokenizer(str(model_dir))
    ids = [i for r in pq.read_table(records_file(run_dir, "sae")).to_pylist()[:40] for i in r["tokens"]]
    ids += tokenizer.encode("naïve café — 𝔘𝔫𝔦 🜁 ꙮ\n<b>", add_special_tokens=False)  # byte-fallback pieces, HTML
    assert token_strings(fast, ids) == token_strings(tokenizer, ids)
    pieces = PieceTable(fast)
    for _ in range(2):  # the second time from its cache
        assert pieces.html(ids) == [str(escape(t.replace("\n", NEWLINE_MARK))) for t in token_strings(tokenizer, ids)]


def test_negative_activations_are_shaded_apart():
    """Raw neurons fire negative too: those tokens get their own colour, opacity by magnitude."""
    from lantern.report.latent_page import shaded

    html = shaded(["a", "&lt;b&gt;", "c"], [2.0, -1.0, 0.0], 2.0)
    assert html == ('<span class="t p" style="--a:1.000" title="2">a</span>'
                    '<span class="t n" style="--a:0.500" title="-1">&lt;b&gt;</span>c')


def test_rows_are_grouped_by_latent_across_chunks():
    """Tables read from Parquet come in chunks; a latent's rows are found wherever they are, in file order, and
    pooled rows (latent null) are left out."""
    import pyarrow as pa

    from lantern.report.data import Grouped

    table = pa.concat_tables([pa.table({"coder": ["b", "a"], "latent": [1, 2], "v": [0, 1]}),
                              pa.table({"coder": ["a", "b", "a"], "latent": [2, 1, None], "v": [2, 3, 4]})])
    grouped = Grouped(table, ("coder", "latent"))
    assert sorted(grouped.keys_present()) == [("a", 2), ("b", 1)]
    assert [r["v"] for r in grouped.rows("a", 2)] == [1, 2] and [r["v"] for r in grouped.rows("b", 1)] == [0, 3]
    assert grouped.rows("a", 1) == []
    with pytest.raises(LanternError, match="x.parquet lacks the column"):
        Grouped(pa.table({"latent": [1]}), ("coder", "latent"), "x.parquet")
