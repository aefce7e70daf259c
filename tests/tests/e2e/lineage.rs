//! Lineage traversal: upstream and downstream node and edge sets at depth 1..5 on a small graph.
//!
//! Edges point upstream (from a node to what it came from):
//!
//! ```text
//!   r2 ──evaluated──▶ mv ──produced_by──▶ r ──consumed──▶ d2 ──derived_from──▶ d1 ──derived_from──▶ d0
//!                                           └──ran──▶ c
//! ```
//! `r —ran→ c`, `r —consumed→ d2`, `mv —produced_by→ r` and `d2 —derived_from→ d1` are written by the
//! server itself (startRun, registerModelVersion, registerDatasetVersion(derivedFrom));
//! `d1 —derived_from→ d0` and `r2 —evaluated→ mv` by linkLineage. A second, unrelated chain
//! (`x2 → x1`) must never show up.

use std::collections::{BTreeMap, BTreeSet};

use custody_tests::fixtures::*;
use custody_tests::{commit_sha, sha256_hex, TestEnv};
use serde_json::{json, Value};

type Node = (String, String); // (kind, id)

struct Graph {
    env: TestEnv,
    names: BTreeMap<Node, &'static str>,
    ids: BTreeMap<&'static str, Node>,
    /// (from, to, relation) by name.
    edges: Vec<(&'static str, &'static str, &'static str)>,
}

async fn build() -> Graph {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    create_dataset(s, a, "p", "base").await;
    create_dataset(s, a, "p", "tx").await;
    create_dataset(s, a, "p", "unrelated").await;
    let d0 = id(&register_dataset_version(s, a, "p", "base", &sha256_hex("d0"), &[]).await);
    let d1 = id(&register_dataset_version(s, a, "p", "tx", &sha256_hex("d1"), &[]).await);
    let d2 = id(&register_dataset_version(s, a, "p", "tx", &sha256_hex("d2"), &[&d1]).await);
    let x1 = id(&register_dataset_version(s, a, "p", "unrelated", &sha256_hex("x1"), &[]).await);
    let x2 = id(&register_dataset_version(s, a, "p", "unrelated", &sha256_hex("x2"), &[&x1]).await);
    let c = id(&register_commit(s, a, "https://git.example.com/l.git", &commit_sha("l")).await);
    let r = id(&start_run(s, a, "p", "train", Some(&c), &[&d2]).await);
    finish_run(s, a, &r, "FINISHED").await;
    create_model(s, a, "p", "m").await;
    let mv = id(&register_model_version(s, a, "p", "m", &r).await);
    let r2 = id(&start_run(s, a, "p", "eval", None, &[]).await);
    link_lineage(
        s,
        a,
        node("DATASET_VERSION", &d1),
        node("DATASET_VERSION", &d0),
        "derived_from",
    )
    .await;
    link_lineage(
        s,
        a,
        node("RUN", &r2),
        node("MODEL_VERSION", &mv),
        "evaluated",
    )
    .await;

    let mut ids = BTreeMap::new();
    for (name, kind, id) in [
        ("d0", "DATASET_VERSION", d0),
        ("d1", "DATASET_VERSION", d1),
        ("d2", "DATASET_VERSION", d2),
        ("x1", "DATASET_VERSION", x1),
        ("x2", "DATASET_VERSION", x2),
        ("c", "CODE_COMMIT", c),
        ("r", "RUN", r),
        ("mv", "MODEL_VERSION", mv),
        ("r2", "RUN", r2),
    ] {
        ids.insert(name, (kind.to_string(), id));
    }
    let names = ids.iter().map(|(n, node)| (node.clone(), *n)).collect();
    let edges = vec![
        ("r2", "mv", "evaluated"),
        ("mv", "r", "produced_by"),
        ("r", "c", "ran"),
        ("r", "d2", "consumed"),
        ("d2", "d1", "derived_from"),
        ("d1", "d0", "derived_from"),
        ("x2", "x1", "derived_from"),
    ];
    Graph {
        env,
        names,
        ids,
        edges,
    }
}

impl Graph {
    /// Expected nodes and edges: a breadth-first walk of at most `depth` steps from `start`.
    fn expected(
        &self,
        start: &'static str,
        upstream: bool,
        depth: usize,
    ) -> (
        BTreeSet<&'static str>,
        BTreeSet<(&'static str, &'static str, &'static str)>,
    ) {
        let mut nodes = BTreeSet::from([start]);
        let mut edges = BTreeSet::new();
        let mut frontier = vec![start];
        for _ in 0..depth {
            let mut next = Vec::new();
            for n in &frontier {
                for e in &self.edges {
                    let (here, there) = if upstream { (e.0, e.1) } else { (e.1, e.0) };
                    if here == *n {
                        edges.insert(*e);
                        if nodes.insert(there) {
                            next.push(there);
                        }
                    }
                }
            }
            frontier = next;
        }
        (nodes, edges)
    }

    fn name(&self, v: &Value) -> &'static str {
        let n: Node = (
            v["kind"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        );
        self.names
            .get(&n)
            .copied()
            .unwrap_or_else(|| panic!("lineage returned a node that is not in the graph: {v}"))
    }

    async fn lineage(
        &self,
        start: &'static str,
        direction: &str,
        depth: usize,
    ) -> (
        BTreeSet<&'static str>,
        BTreeSet<(&'static str, &'static str, &'static str)>,
    ) {
        let (kind, id) = &self.ids[start];
        let d = self
            .env
            .gql_ok(
                &self.env.admin,
                "query($n: NodeRef!, $dir: LineageDirection!, $depth: Int) { lineage(node: $n, direction: $dir, depth: $depth) {
                   nodes { kind id } edges { from { kind id } to { kind id } relation } } }",
                json!({ "n": node(kind, id), "dir": direction, "depth": depth }),
            )
            .await;
        let g = &d["lineage"];
        let node_list: Vec<&'static str> = g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| self.name(n))
            .collect();
        let nodes: BTreeSet<_> = node_list.iter().copied().collect();
        assert_eq!(
            nodes.len(),
            node_list.len(),
            "lineage nodes contain duplicates: {node_list:?}"
        );
        let edge_list: Vec<_> = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let rel: &'static str = self
                    .edges
                    .iter()
                    .map(|x| x.2)
                    .find(|r| e["relation"] == *r)
                    .unwrap_or("?");
                (self.name(&e["from"]), self.name(&e["to"]), rel)
            })
            .collect();
        let edges: BTreeSet<_> = edge_list.iter().copied().collect();
        assert_eq!(
            edges.len(),
            edge_list.len(),
            "lineage edges contain duplicates: {edge_list:?}"
        );
        (nodes, edges)
    }

    async fn check(&self, start: &'static str, upstream: bool) {
        let dir = if upstream { "UPSTREAM" } else { "DOWNSTREAM" };
        for depth in 1..=5 {
            let (want_nodes, want_edges) = self.expected(start, upstream, depth);
            let (nodes, edges) = self.lineage(start, dir, depth).await;
            assert_eq!(
                nodes, want_nodes,
                "lineage({start}, {dir}, depth {depth}): nodes"
            );
            assert_eq!(
                edges, want_edges,
                "lineage({start}, {dir}, depth {depth}): edges (from, to, relation)"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_and_downstream_at_depth_1_to_5() {
    let g = build().await;
    // Sanity of the expectations themselves (so a wrong graph cannot make the test vacuous).
    assert_eq!(g.expected("mv", true, 1).0, BTreeSet::from(["mv", "r"]));
    assert_eq!(
        g.expected("mv", true, 3).0,
        BTreeSet::from(["mv", "r", "c", "d2", "d1"])
    );
    assert_eq!(
        g.expected("d0", false, 5).0,
        BTreeSet::from(["d0", "d1", "d2", "r", "mv", "r2"])
    );
    assert_eq!(
        g.expected("r2", true, 4).0,
        BTreeSet::from(["r2", "mv", "r", "c", "d2", "d1"])
    );

    for start in ["r2", "mv", "r", "d2", "d0", "c", "x1"] {
        g.check(start, true).await;
        g.check(start, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_depth_is_3() {
    let g = build().await;
    let (kind, id) = &g.ids["r2"];
    let d = g
        .env
        .gql_ok(
            &g.env.admin,
            "query($n: NodeRef!) { lineage(node: $n, direction: UPSTREAM) { nodes { kind id } } }",
            json!({ "n": node(kind, id) }),
        )
        .await;
    let nodes: BTreeSet<_> = d["lineage"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| g.name(n))
        .collect();
    assert_eq!(nodes, g.expected("r2", true, 3).0);
}

/// The automatic edges carry the relations fixed by the issue, pointing upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_edges_point_upstream() {
    let g = build().await;
    let (_, edges) = g.lineage("mv", "UPSTREAM", 5).await;
    for e in [
        ("mv", "r", "produced_by"),
        ("r", "c", "ran"),
        ("r", "d2", "consumed"),
        ("d2", "d1", "derived_from"),
    ] {
        assert!(
            edges.contains(&e),
            "missing automatic edge {e:?} in {edges:?}"
        );
    }
    let sql = g.env.sql().await;
    let n = custody_tests::db::count(&sql, "lineage_edges").await;
    assert_eq!(n as usize, g.edges.len(), "lineage_edges rows");
}

/// Lineage crosses projects (a dataset of one project feeds a run of another); a traversal shows
/// a member only the nodes of projects they belong to, and no edge into a hidden node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_projects_the_caller_cannot_read_stay_hidden() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "vault").await;
    create_project(s, a, "team").await;
    create_dataset(s, a, "vault", "secret").await;
    let dv = id(&register_dataset_version(s, a, "vault", "secret", &sha256_hex("s"), &[]).await);
    let c = id(&register_commit(s, a, "https://git.example.com/t.git", &commit_sha("t")).await);
    let run = id(&start_run(s, a, "team", "train", Some(&c), &[&dv]).await);
    let bob = member_token(s, a, "team", "bob@example.com", "VIEWER").await;

    let query = "query($n: NodeRef!) { lineage(node: $n, direction: UPSTREAM, depth: 5) { nodes { kind id } edges { relation from { id } to { id } } } }";
    let seen = |d: &Value| -> (BTreeSet<String>, BTreeSet<String>) {
        let nodes = d["lineage"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        let edges = d["lineage"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["relation"].as_str().unwrap().to_string())
            .collect();
        (nodes, edges)
    };
    let (nodes, edges) = seen(
        &env.gql_ok(a, query, json!({ "n": node("RUN", &run) }))
            .await,
    );
    assert_eq!(
        nodes,
        BTreeSet::from([run.clone(), c.clone(), dv.clone()]),
        "the admin sees everything"
    );
    assert_eq!(
        edges,
        BTreeSet::from(["ran".to_string(), "consumed".to_string()])
    );

    let (nodes, edges) = seen(
        &env.gql_ok(&bob, query, json!({ "n": node("RUN", &run) }))
            .await,
    );
    assert_eq!(
        nodes,
        BTreeSet::from([run.clone(), c.clone()]),
        "bob must not see the vault's dataset"
    );
    assert_eq!(edges, BTreeSet::from(["ran".to_string()]));

    // And bob cannot start from the hidden node at all: it answers like a node that does not
    // exist (same code, same message), so bob cannot even tell it is there.
    let hidden = env
        .gql(&bob, query, json!({ "n": node("DATASET_VERSION", &dv) }))
        .await;
    let missing_id = "00000000-0000-7000-8000-000000000000";
    let missing = env
        .gql(
            &bob,
            query,
            json!({ "n": node("DATASET_VERSION", missing_id) }),
        )
        .await;
    assert_eq!(
        hidden["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{hidden}"
    );
    assert_eq!(
        hidden["errors"][0]["message"]
            .as_str()
            .unwrap()
            .replace(&dv, "ID"),
        missing["errors"][0]["message"]
            .as_str()
            .unwrap()
            .replace(missing_id, "ID"),
    );
}
