//! Layers point one way. Across crates cargo enforces it; these read what cargo resolves
//! (the kernel links no HTTP and no domain service, the audit log only the kernel) and check
//! the import checker that keeps modules inside a crate acyclic and below its edge, on
//! fixtures it must refuse and pass.

use std::{collections::BTreeSet, path::Path, process::Command};

use super::features::linked_crates;

/// Whether `linked` holds a crate named `name` or, for a name ending in `-`, one of that
/// family (`async-stripe-` is every async-stripe crate).
fn links(linked: &BTreeSet<String>, name: &str) -> bool {
    linked.iter().any(|c| c == name.trim_end_matches('-') || (name.ends_with('-') && c.starts_with(name)))
}

/// What no crate below the facade may link: HTTP, and the facade itself.
const EDGE: &[&str] = &["lambda_http", "aws_lambda_events", "shared"];
/// The clients of the services only some domains use.
const SERVICES: &[&str] = &["async-stripe-", "aws-sdk-sesv2", "aws-sdk-sns", "minijinja"];

#[test]
fn the_kernel_links_no_http_no_domain_service_and_no_crate_above_it() {
    let linked = linked_crates("kernel");
    assert!(linked.contains("aws-sdk-dynamodb"), "the graph was read: {linked:?}");
    for above in EDGE.iter().chain(SERVICES).chain(&["audit-log"]) {
        assert!(!links(&linked, above), "the kernel links {above}");
    }
}

#[test]
fn the_audit_log_stands_on_the_kernel_alone() {
    let linked = linked_crates("audit-log");
    assert!(linked.contains("kernel"), "the graph was read: {linked:?}");
    for above in EDGE.iter().chain(SERVICES) {
        assert!(!links(&linked, above), "the audit log links {above}");
    }
}

/// Runs the checker on a crate made of `files` (path, code); its exit status and output.
fn check(files: &[(&str, &str)]) -> (bool, String) {
    let root = std::env::temp_dir().join(format!("cycles-{}", uuid::Uuid::new_v4()));
    for (path, code) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, code).unwrap();
    }
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/module_cycles.py"))
        .arg(&root)
        .output()
        .expect("python3 runs the checker");
    std::fs::remove_dir_all(&root).unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_import_checker_sees_a_cycle_through_a_re_export() {
    let (passed, output) = check(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub use a::Account;\n"),
        ("a.rs", "use crate::b::Task;\npub struct Account(Task);\n"),
        // `crate::Account` is a's, re-exported at the root: b imports a.
        ("b.rs", "pub struct Task;\npub fn run(_: &crate::Account) {}\n"),
    ]);
    assert!(!passed, "{output}");
    assert!(output.contains("NEW CYCLE: a <-> b"), "{output}");
}

#[test]
fn the_import_checker_passes_layers_that_point_one_way() {
    let (passed, output) = check(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub use a::Account;\n"),
        ("a.rs", "use crate::b::Task;\npub struct Account(Task);\n"),
        ("b.rs", "pub struct Task;\n#[cfg(test)]\nmod tests { use crate::Account; }\n"),
    ]);
    assert!(passed, "{output}");
    assert!(output.contains("0 cycle(s)"), "{output}");
}

#[test]
fn the_import_checker_refuses_a_domain_module_that_names_the_app() {
    let (passed, output) = check(&[
        ("lib.rs", "pub mod app;\npub mod identity;\npub use app::App;\n"),
        ("app.rs", "pub struct App;\n"),
        // Through the root's re-export, as `use crate::App` would.
        ("identity.rs", "pub fn login(_: &crate::App) {}\n"),
    ]);
    assert!(!passed, "{output}");
    assert!(output.contains("LAYER: identity imports the edge's app"), "{output}");
}
