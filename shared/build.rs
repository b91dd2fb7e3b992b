//! `GET /openapi.json` serves the project's OpenAPI document. Its one source is the
//! hand-kept `openapi.yaml` at the workspace root; this turns it into JSON at build time,
//! so the function carries no YAML parser and the two can never disagree.

use std::{env, fs, path::PathBuf};

fn main() {
    let source = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../openapi.yaml");
    println!("cargo:rerun-if-changed={}", source.display());
    let yaml = fs::read_to_string(&source).expect("openapi.yaml at the workspace root");
    let document: serde_json::Value = serde_norway::from_str(&yaml).expect("openapi.yaml is valid YAML");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("openapi.json");
    fs::write(out, serde_json::to_string(&document).unwrap()).unwrap();
}
