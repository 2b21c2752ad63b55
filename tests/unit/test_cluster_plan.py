"""How `dev-cluster up --nodes N` lays out a cluster: roles, discovery settings, the state file (no nodes started)."""

from __future__ import annotations

from pathlib import Path

from e5plugin.devcluster.cluster import Cluster, member_settings, plan_roles


def test_three_opensearch_nodes_get_two_data_nodes_and_one_dedicated_ml_node():
    roles = plan_roles("opensearch", 3)
    assert [("data" in r, "ml" in r, "cluster_manager" in r) for r in roles] == [  # type: ignore[operator]
        (True, False, True),
        (True, False, True),
        (False, True, True),  # no shards on the ML node; as a third voter it keeps a quorum when a data node dies
    ]
    assert plan_roles("opensearch", 2) == [None, None]
    assert plan_roles("elasticsearch", 3) == [None, None, None]


def test_members_share_seeds_and_bootstrap_list_per_engine():
    names, ports = ["c-1", "c-2", "c-3"], [9301, 9302, 9303]
    opensearch = member_settings("opensearch", "e5plugin-c", names, ports)
    assert opensearch["discovery.type"] == "zen"  # node.py's default is single-node
    assert opensearch["discovery.seed_hosts"] == "127.0.0.1:9301,127.0.0.1:9302,127.0.0.1:9303"
    assert opensearch["cluster.initial_cluster_manager_nodes"] == "c-1,c-2,c-3"
    elasticsearch = member_settings("elasticsearch", "e5plugin-c", names, ports)
    assert elasticsearch["discovery.type"] == "multi-node"
    assert elasticsearch["cluster.initial_master_nodes"] == "c-1,c-2,c-3"


def test_cluster_state_round_trips_and_lists_no_member_that_was_never_written(tmp_path: Path):
    cluster = Cluster("c", "opensearch", tmp_path / "c", [tmp_path / "c" / "c-1"])
    cluster.save_state()
    loaded = Cluster.load_state(tmp_path / "c")
    assert loaded is not None and (loaded.name, loaded.engine, loaded.members) == ("c", "opensearch", cluster.members)
    assert loaded.nodes == [] and not loaded.is_running()
    assert Cluster.load_state(tmp_path / "absent") is None
