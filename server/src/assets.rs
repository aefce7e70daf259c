//! The pages' static files (`web/static`), built into the binary like the templates. Each is
//! linked as `/static/<name>?v=<content hash>`: browsers may keep it for a year, and a new
//! release (new content, new hash) is fetched at once.

use std::collections::HashMap;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "custody.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/static/custody.css"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/charts.js"),
    },
    Asset {
        name: "filter-keys.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/filter-keys.js"),
    },
    // uPlot 1.6.31 (MIT, web/static/uplot.LICENSE), vendored as published on npm.
    Asset {
        name: "uplot.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/uplot.js"),
    },
    Asset {
        name: "uplot.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/static/uplot.css"),
    },
];

struct Known {
    asset: &'static Asset,
    /// The first 16 hex digits of the content's SHA-256.
    version: String,
}

fn known() -> &'static HashMap<&'static str, Known> {
    static KNOWN: OnceLock<HashMap<&'static str, Known>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let version = hex::encode(&Sha256::digest(asset.bytes)[..8]);
                (asset.name, Known { asset, version })
            })
            .collect()
    })
}

/// The asset called `name` and its content version.
pub fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    known().get(name).map(|k| (k.asset, k.version.as_str()))
}

/// Every asset's versioned URL, by a template-friendly key: the name with `_` for each dot
/// or dash (`custody.css` → `custody_css`, `runs-table.js` → `runs_table_js`).
pub fn urls() -> serde_json::Value {
    known()
        .iter()
        .map(|(name, k)| {
            let key = name.replace(['.', '-'], "_");
            (key, format!("/static/{name}?v={}", k.version).into())
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}
