//! Lean functions: each function links only the services it uses. `shared` puts Stripe, SES
//! and SNS behind features; these tests read the dependency graph cargo resolves for each
//! function on its own (as `sam build` builds it, from the function's directory), so a function that
//! starts pulling in Stripe or SES by accident fails here, not in a size report.

use std::{collections::BTreeSet, process::Command};

/// The crates behind each of `shared`'s features.
const STRIPE: &str = "async-stripe";
const SES: &str = "aws-sdk-sesv2";
const SNS: &str = "aws-sdk-sns";

/// Every function, and which of those it may link.
const FUNCTIONS: &[(&str, &[&str])] = &[
    ("register", &[]),
    ("verify", &[]),
    ("login", &[]),
    ("reset", &[]),
    ("account", &[]),
    ("audit", &[]),
    ("notifications", &[SNS]),
    ("notify", &[SES, SNS]),
    ("pay", &[STRIPE]),
    ("release", &[STRIPE]),
    ("webhook", &[STRIPE]),
    ("cleanup", &[STRIPE, SES, SNS]),
];

/// The crates `package` links (normal dependencies, its own features only).
pub(crate) fn linked_crates(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn each_function_links_only_the_services_it_uses() {
    for (function, allowed) in FUNCTIONS {
        let linked = linked_crates(function);
        assert!(linked.contains("aws-sdk-dynamodb"), "{function}: the graph was read ({linked:?})");
        for service in [STRIPE, SES, SNS] {
            assert_eq!(
                linked.contains(service),
                allowed.contains(&service),
                "{function} {} {service}",
                if allowed.contains(&service) { "needs" } else { "must not link" }
            );
        }
    }
}

#[test]
fn every_function_in_the_workspace_is_listed() {
    let listed: BTreeSet<&str> = FUNCTIONS.iter().map(|(name, _)| *name).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/functions"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, on_disk.iter().map(String::as_str).collect());
}

#[test]
fn sam_builds_each_function_as_its_own_package() {
    // From its own directory (SAM passes no package flag to cargo-lambda): cargo then
    // resolves features for that package alone.
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    for (function, _) in FUNCTIONS {
        let built = format!("Binary: {function}\n");
        let at = template.find(&built).unwrap_or_else(|| panic!("{function}: built from its binary"));
        let properties = &template[at..];
        let properties = &properties[..properties.find("\n  Function").unwrap_or(properties.len())];
        assert!(
            properties.contains(&format!("CodeUri: functions/{function}\n")),
            "{function}: built from functions/{function}, so with its own features only"
        );
    }
}
