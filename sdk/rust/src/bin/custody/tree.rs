//! Lineage graphs as readable trees.
//!
//! Edges point upstream (`from` depends on `to`). Upstream, a node's children are what it came
//! from (`─ relation → NODE`); downstream, what came from it (`─ relation ← NODE`). A node reached
//! a second time is shown once more, marked, without its subtree.

use std::collections::{BTreeMap, HashSet};

use custody::{LineageDirection, LineageGraph, NodeKind};

type Key = (NodeKind, String);

pub fn render(graph: &LineageGraph, start: &Key, direction: LineageDirection) -> String {
    let mut children: BTreeMap<Key, Vec<(String, Key)>> = BTreeMap::new();
    for edge in &graph.edges {
        let from = (edge.from.kind, edge.from.id.clone());
        let to = (edge.to.kind, edge.to.id.clone());
        let (parent, child) = match direction {
            LineageDirection::Downstream => (to, from),
            _ => (from, to),
        };
        children
            .entry(parent)
            .or_default()
            .push((edge.relation.clone(), child));
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| {
            (a.0.as_str(), a.1 .0.as_str(), &a.1 .1).cmp(&(b.0.as_str(), b.1 .0.as_str(), &b.1 .1))
        });
        list.dedup();
    }
    let arrow = if direction == LineageDirection::Downstream {
        "←"
    } else {
        "→"
    };
    let mut out = format!("{}\n", label(start));
    let mut seen = HashSet::from([start.clone()]);
    walk(start, &children, arrow, "", &mut seen, &mut out);
    if graph.edges.is_empty() {
        let way = if direction == LineageDirection::Downstream {
            "downstream"
        } else {
            "upstream"
        };
        out.push_str(&format!("(nothing {way} within the depth asked)\n"));
    }
    out
}

fn label(node: &Key) -> String {
    format!(
        "{} {}",
        node.0.as_str().replace('_', " ").to_lowercase(),
        node.1
    )
}

fn walk(
    node: &Key,
    children: &BTreeMap<Key, Vec<(String, Key)>>,
    arrow: &str,
    prefix: &str,
    seen: &mut HashSet<Key>,
    out: &mut String,
) {
    let Some(list) = children.get(node) else {
        return;
    };
    for (i, (relation, child)) in list.iter().enumerate() {
        let last = i + 1 == list.len();
        let (branch, indent) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        let again = !seen.insert(child.clone());
        out.push_str(&format!(
            "{prefix}{branch} {relation} {arrow} {}{}\n",
            label(child),
            if again && children.contains_key(child) {
                " (see above)"
            } else {
                ""
            }
        ));
        if !again {
            walk(
                child,
                children,
                arrow,
                &format!("{prefix}{indent}"),
                seen,
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody::ops::lineage::{
        LineageLineage, LineageLineageEdges, LineageLineageEdgesFrom, LineageLineageEdgesTo,
        LineageLineageNodes,
    };

    fn edge(from: (NodeKind, &str), to: (NodeKind, &str), relation: &str) -> LineageLineageEdges {
        LineageLineageEdges {
            id: format!("{}-{}", from.1, to.1),
            from: LineageLineageEdgesFrom {
                kind: from.0,
                id: from.1.into(),
            },
            to: LineageLineageEdgesTo {
                kind: to.0,
                id: to.1.into(),
            },
            relation: relation.into(),
            created_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn upstream_tree() {
        let graph = LineageLineage {
            nodes: vec![LineageLineageNodes {
                kind: NodeKind::ModelVersion,
                id: "mv".into(),
            }],
            edges: vec![
                edge(
                    (NodeKind::ModelVersion, "mv"),
                    (NodeKind::Run, "r"),
                    "produced_by",
                ),
                edge(
                    (NodeKind::Run, "r"),
                    (NodeKind::DatasetVersion, "d2"),
                    "consumed",
                ),
                edge((NodeKind::Run, "r"), (NodeKind::CodeCommit, "c"), "ran"),
                edge(
                    (NodeKind::DatasetVersion, "d2"),
                    (NodeKind::DatasetVersion, "d1"),
                    "derived_from",
                ),
            ],
        };
        let text = render(
            &graph,
            &(NodeKind::ModelVersion, "mv".into()),
            LineageDirection::Upstream,
        );
        assert_eq!(
            text,
            "model version mv\n\
             └─ produced_by → run r\n   \
                ├─ consumed → dataset version d2\n   \
                │  └─ derived_from → dataset version d1\n   \
                └─ ran → code commit c\n"
        );
        let down = render(
            &graph,
            &(NodeKind::DatasetVersion, "d1".into()),
            LineageDirection::Downstream,
        );
        assert!(
            down.starts_with("dataset version d1\n└─ derived_from ← dataset version d2\n"),
            "{down}"
        );
    }
}
