"""Discovery that misses nothing: polls page back to the cursor, ask the server for candidates
only, and read a repo's base from the Hub's model tree when its card does not name one.
Everything through the real huggingface_hub client against the Hub double."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from depthcard.bot import discover
from depthcard.bot.hub import Hub
from depthcard.bot.pairs import RepoFacts
from depthcard.bot.state import StateStore
from depthcard.schemas.bot_config import BotConfig
from tests.bot_helpers import CALIBRATION
from tests.hub_double import HubDouble


def weights() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (CALIBRATION / "instruct").iterdir()}


@pytest.fixture
def double():
    with HubDouble() as hub:
        hub.page_size = 3
        yield hub


def hub_of(double: HubDouble, tmp_path) -> Hub:
    return Hub(None, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")


def listings(double: HubDouble) -> list[str]:
    return [path for method, path, _ in double.requests if path.startswith("/api/models?")]


def test_more_than_poll_limit_new_models_are_all_found(double, tmp_path):
    hub, store = hub_of(double, tmp_path), StateStore(tmp_path / "s.sqlite")
    cfg = BotConfig(organizations=["acme"], poll_limit=2)
    for i in range(4):
        double.add_repo(f"acme/old{i}", weights())
    first = discover.poll(hub, store, cfg)
    assert first == ["acme/old3", "acme/old2"]  # no cursor yet: the newest poll_limit
    new = [f"acme/new{i}" for i in range(7)]
    for repo in new:
        double.add_repo(repo, weights())
    double.requests.clear()
    assert discover.poll(hub, store, cfg) == new[::-1]  # 7 > poll_limit, none lost
    pages = listings(double)
    assert len(pages) == 3 and all("cursor=" in p for p in pages[1:])  # 3 + 3 + 1 (the cursor)
    assert discover.poll(hub, store, cfg) == []
    assert set(store.inbox()) == {*first, *new}


def test_a_poll_stops_reading_pages_at_the_cursor(double, tmp_path):
    hub, store = hub_of(double, tmp_path), StateStore(tmp_path / "s.sqlite")
    cfg = BotConfig(organizations=["acme"], poll_limit=50)
    for i in range(12):
        double.add_repo(f"acme/m{i:02d}", weights())
    assert len(discover.poll(hub, store, cfg)) == 12
    double.add_repo("acme/fresh", weights())
    double.requests.clear()
    assert discover.poll(hub, store, cfg) == ["acme/fresh"]
    assert len(listings(double)) == 1  # the older pages are never asked for


def test_the_server_filters_what_the_bot_would_skip(double, tmp_path):
    hub, store = hub_of(double, tmp_path), StateStore(tmp_path / "s.sqlite")
    cfg = BotConfig(organizations=["acme"], parameter_budget=1_500_000_000)
    double.add_repo("acme/ok", weights())  # parameters counted from the header, as the Hub does
    double.add_repo("acme/gated", weights(), gated="auto")
    double.add_repo("acme/huge", weights(), parameters=3 * 10**9)  # over max:2B
    pickle = {k: v for k, v in weights().items() if not k.endswith(".safetensors")}
    double.add_repo("acme/pickle", {**pickle, "pytorch_model.bin": b"PK"})
    double.add_repo(
        "acme/vision", {**weights(), "README.md": "---\npipeline_tag: image-to-text\n---\n"}
    )
    assert discover.listing_filters(cfg) == {
        "filter": "safetensors",
        "gated": False,
        "num_parameters": "max:2B",
        "pipeline_tag": "text-generation",
    }
    assert discover.poll(hub, store, cfg) == ["acme/ok"]
    (query,) = listings(double)
    for part in ("filter=safetensors", "gated=false", "num_parameters=max%3A2B",
                 "pipeline_tag=text-generation", "sort=createdAt"):  # fmt: skip
        assert part in query, query
    unfiltered = cfg.model_copy(update={"server_filters": False})
    store.set_value("cursor:acme", "2000-01-01T00:00:00+00:00")
    everything = ["acme/gated", "acme/huge", "acme/ok", "acme/pickle", "acme/vision"]
    assert sorted(discover.poll(hub, store, unfiltered)) == everything


def test_hub_lineage_reads_the_model_tree_in_either_shape_and_the_tags():
    tree = SimpleNamespace(base_models={"relation": "adapter", "models": [{"id": "o/base"}]})
    assert discover.hub_lineage(tree) == (["o/base"], "adapter")
    listed = SimpleNamespace(base_models=["o/base"], tags=["base_model:quantized:o/base"])
    assert discover.hub_lineage(listed) == (["o/base"], "quantized")
    tags = SimpleNamespace(tags=["base_model:o/b", "base_model:finetune:o/b", "text-generation"])
    assert discover.hub_lineage(tags) == (["o/b"], "finetune")
    assert discover.hub_lineage(SimpleNamespace(base_models=None, tags=None)) == ([], None)


def test_the_card_wins_over_the_hub_lineage():
    facts = RepoFacts("o/x-it", "s" * 40, (), card={"base_model": "o/x",
                      "base_model_relation": "finetune"})  # fmt: skip
    info = SimpleNamespace(base_models={"relation": "merge", "models": [{"id": "o/y"}]})
    assert discover.with_hub_lineage(facts, info) is facts
    bare = RepoFacts("o/x-it", "s" * 40, ())
    filled = discover.with_hub_lineage(bare, info)
    assert filled.card == {"base_model": ["o/y"], "base_model_relation": "merge"}


def test_model_info_carries_the_model_tree_and_a_relation_the_hub_inferred(double, tmp_path):
    hub, store = hub_of(double, tmp_path), StateStore(tmp_path / "s.sqlite")
    double.add_repo("acme/tiny", weights())
    card = "---\nbase_model: acme/tiny\n---\n# an adapter whose card does not say so\n"
    double.add_repo("acme/tiny-lora", {**weights(), "adapter_config.json": b"{}",
                                       "README.md": card})  # fmt: skip
    info = hub.model_info("acme/tiny-lora")
    assert info.base_models == {"relation": "adapter", "models": [{"id": "acme/tiny"}]}
    assert "base_model:adapter:acme/tiny" in info.tags
    facts = discover.repo_facts(hub, "acme/tiny-lora")
    assert facts.card["base_model_relation"] == "adapter"
    key = discover.examine_child(hub, store, BotConfig(), "acme/tiny-lora", "a1")
    row = store.get(key)
    assert row.state == "skipped" and "'adapter', not a fine-tune" in row.reason
