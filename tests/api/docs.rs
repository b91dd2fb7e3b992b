//! The user documentation: README.md, docs/*.md and LICENSE. Users read those and
//! openapi.yaml only, so every link in them resolves inside the repository (relative links to
//! files that exist, `#anchors` to headings that exist), none leads outside it (no web links,
//! no `../` above the root), none names an internal issue number, the README stays short,
//! and LICENSE is the licence Cargo.toml declares.
//!
//! Needs no stack: `cargo test --test docs`.

use std::path::{Component, Path, PathBuf};

const README_MAX_LINES: usize = 200;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, as (path relative to the root, text).
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(root()).unwrap().to_owned())
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ has no .md files");
    paths.extend(docs);
    paths
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(root().join(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, text)
        })
        .collect()
}

/// The text outside fenced code blocks and inline code spans, line by line (code is shown,
/// not linked). Removed code leaves a space, so words on either side stay apart.
fn prose(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            continue;
        }
        out.push((index + 1, without_code_spans(line)));
    }
    out
}

fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => {
                out.push(' ');
                rest = &after[end + ticks..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every link target in the prose: inline `[text](target)` and `![alt](target)`, reference
/// definitions `[label]: target`, and autolinks `<scheme://...>`. With its line number.
fn links(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (line_number, line) in prose(markdown) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].trim();
            // `[text](target "title")`
            let target = target.split_whitespace().next().unwrap_or("");
            found.push((line_number, target.trim_matches(|c| c == '<' || c == '>').to_owned()));
            rest = &after[end..];
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(close) = trimmed.find("]:")
        {
            let target = trimmed[close + 2..].split_whitespace().next().unwrap_or("");
            found.push((line_number, target.to_owned()));
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find('<') {
            let after = &rest[at + 1..];
            let end = after.find('>').unwrap_or(after.len());
            if after[..end].contains("://") {
                found.push((line_number, after[..end].to_owned()));
            }
            rest = &after[end.min(after.len())..];
        }
    }
    found
}

/// Why `target` (a link in the document at `from`, relative to the root) leaves the
/// repository, if it does.
fn leaves_the_repository(from: &Path, target: &str) -> Option<String> {
    let lower = target.to_ascii_lowercase();
    if lower.contains("://") || lower.starts_with("//") || lower.starts_with("mailto:") || lower.starts_with("www.") {
        return Some("points outside the repository".into());
    }
    let path = target.split('#').next().unwrap_or("");
    if path.starts_with('/') {
        return Some("is absolute: use a path relative to the document".into());
    }
    resolve(from, path).is_none().then(|| "escapes the repository root".into())
}

/// `path` relative to the directory of `from`, both relative to the root, normalised; `None`
/// if it climbs above the root.
fn resolve(from: &Path, path: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = from.parent().into_iter().flat_map(components).collect();
    for part in components(Path::new(path)) {
        if part == ".." {
            parts.pop()?;
        } else {
            parts.push(part);
        }
    }
    Some(parts.iter().collect())
}

fn components(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a document's headings (outside code blocks); a repeated heading's get
/// `-1`, `-2`, ... as GitHub numbers them.
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut anchors = Vec::new();
    let mut fence: Option<String> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str()) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(trimmed[..3].to_owned());
            continue;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            let base = slug(line[level..].trim().trim_end_matches('#'));
            let times = seen.entry(base.clone()).or_insert(0);
            anchors.push(if *times == 0 { base } else { format!("{base}-{times}") });
            *times += 1;
        }
    }
    anchors
}

/// Why a relative link does not resolve, if it doesn't.
fn broken(from: &Path, target: &str) -> Option<String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() { from.to_owned() } else { resolve(from, path)? };
    let on_disk = root().join(&file);
    if !on_disk.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    if let Some(anchor) = anchor
        && file.extension().is_some_and(|ext| ext == "md")
    {
        let text = std::fs::read_to_string(&on_disk).unwrap();
        if !anchors(&text).iter().any(|a| a == anchor) {
            return Some(format!("{} has no heading for #{anchor}", file.display()));
        }
    }
    None
}

/// Places in `text` that look like an internal issue or pull request number: `issue 12`,
/// `issues #12`, `PR 12`, `pull request 12`, or a bare `#12`.
fn issue_numbers(text: &str) -> Vec<String> {
    // ASCII lower case keeps every byte offset, so `at` indexes `text` too.
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut found = Vec::new();
    let word_start = |at: usize| at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
    let number_after = |mut at: usize| {
        while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t' || bytes[at] == b'\n') {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'#' {
            at += 1;
        }
        at < bytes.len() && bytes[at].is_ascii_digit()
    };
    for word in ["issues", "issue", "pull request", "pr", "ticket"] {
        let mut from = 0;
        while let Some(offset) = lower[from..].find(word) {
            let at = from + offset;
            if word_start(at) && number_after(at + word.len()) {
                found.push(context(text, at));
            }
            from = at + word.len();
        }
    }
    for (at, _) in lower.match_indices('#') {
        let before = if at == 0 { b' ' } else { bytes[at - 1] };
        let standalone = !(before.is_ascii_alphanumeric() || matches!(before, b'&' | b'#' | b'/' | b'_'));
        if standalone && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            found.push(context(text, at));
        }
    }
    found
}

fn context(text: &str, at: usize) -> String {
    let start = text[..at].char_indices().rev().nth(20).map_or(0, |(i, _)| i);
    let end = text[at..].char_indices().nth(30).map_or(text.len(), |(i, _)| at + i);
    text[start..end].replace('\n', " ")
}

#[test]
fn every_relative_link_resolves_to_a_file_and_heading() {
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for (line, target) in links(&text) {
            if target.is_empty() {
                problems.push(format!("{}:{line}: an empty link", path.display()));
                continue;
            }
            if leaves_the_repository(&path, &target).is_some() {
                continue; // the next test's
            }
            if let Some(why) = broken(&path, &target) {
                problems.push(format!("{}:{line}: ({target}) {why}", path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

/// The repository paths a document names in code spans (`shared/src/...`), with their lines.
fn named_paths(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in markdown.lines().enumerate() {
        for (i, span) in line.split('`').enumerate() {
            let top = span.split('/').next().unwrap_or_default();
            if i % 2 == 1
                && ["shared", "functions", "infra", "tests", "events", "benches", "docs"].contains(&top)
                && span.contains('/')
                && !span.contains(['<', '{', '*', ' '])
            {
                found.push((n + 1, span.trim_end_matches(['.', ',', ':']).to_owned()));
            }
        }
    }
    found
}

#[test]
fn every_path_the_docs_name_exists() {
    let mut missing = Vec::new();
    for (path, text) in documents() {
        for (line, named) in named_paths(&text) {
            if !root().join(&named).exists() {
                missing.push(format!("{}:{line}: {named}", path.display()));
            }
        }
    }
    assert!(missing.is_empty(), "the docs name paths that are not in the repository:\n{}", missing.join("\n"));
}

#[test]
fn no_link_leaves_the_repository() {
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for (line, target) in links(&text) {
            if let Some(why) = leaves_the_repository(&path, &target) {
                problems.push(format!("{}:{line}: ({target}) {why}", path.display()));
            }
        }
        // A bare web address in prose is a link too (GitHub links it).
        for (line, prose) in prose(&text) {
            if prose.contains("http://") || prose.contains("https://") {
                problems.push(format!("{}:{line}: a web address outside code: {}", path.display(), prose.trim()));
            }
        }
    }
    assert!(problems.is_empty(), "links out of the repository:\n{}", problems.join("\n"));
}

#[test]
fn no_internal_issue_numbers() {
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for found in issue_numbers(&text) {
            problems.push(format!("{}: …{found}…", path.display()));
        }
    }
    assert!(problems.is_empty(), "internal issue numbers:\n{}", problems.join("\n"));
}

#[test]
fn readme_is_short() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES} (move detail into docs/)"
    );
}

/// The licence Cargo.toml declares (`license = "..."`, the workspace's or the package's).
fn declared_license() -> String {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .map(str::trim)
        .find_map(|line| {
            let value = line.strip_prefix("license")?.trim_start().strip_prefix('=')?.trim();
            Some(value.trim_matches('"').to_owned())
        })
        .expect("Cargo.toml declares a license")
}

/// Phrases a LICENSE file of each SPDX id must hold.
fn license_phrases(spdx: &str) -> Option<&'static [&'static str]> {
    match spdx {
        "MIT" => Some(&[
            "MIT License",
            "Copyright (c) ",
            "Permission is hereby granted, free of charge, to any person obtaining a copy",
            "The above copyright notice and this permission notice shall be included in all",
            "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND",
        ]),
        "Apache-2.0" => Some(&["Apache License", "Version 2.0, January 2004"]),
        _ => None,
    }
}

fn license_mismatch(spdx: &str, license: &str) -> Option<String> {
    let Some(phrases) = license_phrases(spdx) else {
        return Some(format!("Cargo.toml says {spdx:?}, which this test does not know: add its phrases"));
    };
    let missing: Vec<_> = phrases.iter().filter(|p| !license.contains(*p)).collect();
    (!missing.is_empty()).then(|| format!("LICENSE is not the {spdx} licence Cargo.toml declares: lacks {missing:?}"))
}

#[test]
fn license_is_the_one_cargo_toml_declares() {
    let spdx = declared_license();
    let license = std::fs::read_to_string(root().join("LICENSE")).expect("a LICENSE file at the repository root");
    if let Some(why) = license_mismatch(&spdx, &license) {
        panic!("{why}");
    }
}

/// The checks above, on documents made to break them: each would fail if the docs did.
#[test]
fn the_checks_catch_what_they_are_for() {
    let readme = Path::new("README.md");
    let doc = Path::new("docs/deploy.md");
    // Links, inline code and fences.
    let text = "See [a](docs/a.md#b-c) and `[not](a link)`.\n```\n[nor](this)\n```\n[ref]: ../x.md\n<https://x.test>";
    let found: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["docs/a.md#b-c", "../x.md", "https://x.test"]);
    // Leaving the repository.
    assert!(leaves_the_repository(readme, "https://example.com").is_some());
    assert!(leaves_the_repository(readme, "HTTP://example.com").is_some());
    assert!(leaves_the_repository(readme, "../shared/API.md").is_some());
    assert!(leaves_the_repository(doc, "../../x.md").is_some());
    assert!(leaves_the_repository(doc, "/etc/passwd").is_some());
    assert!(leaves_the_repository(doc, "../openapi.yaml").is_none());
    assert!(leaves_the_repository(readme, "docs/deploy.md#5-stripe").is_none());
    // Resolving files and headings.
    assert!(broken(readme, "docs/no-such-file.md").is_some());
    assert!(broken(readme, "docs/deploy.md#no-such-heading").is_some());
    assert!(broken(readme, "docs/deploy.md#5-stripe").is_none());
    assert!(broken(doc, "../openapi.yaml").is_none());
    assert!(broken(doc, "#rollback").is_none());
    assert_eq!(slug("What `infra/dev.sh` writes"), "what-infradevsh-writes");
    assert_eq!(slug("11. Smoke test"), "11-smoke-test");
    assert_eq!(anchors("# A\n## A\n```\n# B\n```\n"), ["a", "a-1"]);
    // Issue numbers.
    for bad in ["see issue 12", "Issue #4", "issues 3 and 4", "(#14)", "PR 7", "pull request #9"] {
        assert!(!issue_numbers(bad).is_empty(), "{bad}");
    }
    for good in ["`AUDIT#{org}`", "an issue with 3 fields", "#rollback", "&#8212;", "GSI2PK", "RFC 8058", "PROVIDERS"] {
        assert!(issue_numbers(good).is_empty(), "{good}");
    }
    // The licence.
    assert!(license_mismatch("MIT", "Apache License\nVersion 2.0, January 2004").is_some());
    assert!(license_mismatch("GPL-3.0", "anything").is_some());
    let mit = std::fs::read_to_string(root().join("LICENSE")).unwrap_or_default();
    assert!(license_mismatch("Apache-2.0", &mit).is_some());
}
